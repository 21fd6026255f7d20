"""boto3 clients and retries shared by the AWS backends.

Endpoint and region come from the backend's config table when set there (``endpoint_url``,
``region``), else from boto3's own chain, which also honours ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>``. Credentials always come from boto3's chain.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Mapping, Optional, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Error codes that mean "slow down" rather than "this request is wrong".
THROTTLING_CODES = frozenset({
    "TooManyRequestsException", "ThrottlingException", "Throttling", "ThrottledException",
    "RequestLimitExceeded", "SlowDown", "RequestThrottled", "RequestThrottledException",
    "ProvisionedThroughputExceededException", "EC2ThrottledException",
})
#: Error codes of failures that pass if the request is repeated.
TRANSIENT_CODES = frozenset({
    "ServiceException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalError", "InternalFailure", "InternalServerError", "RequestTimeout",
    "RequestTimeoutException", "ResourceConflictException", "ResourceNotReadyException",
})

_session_lock = threading.Lock()


def make_client(service: str, section: Optional[Mapping[str, Any]] = None, *,
                max_pool_connections: int = 10, max_attempts: int = 3) -> Any:
    """A boto3 client for ``service``, honouring ``endpoint_url``/``region`` of ``section``.

    Args:
        service: the boto3 service name (``"lambda"``, ``"iam"`` …).
        section: a config table; ``endpoint_url`` and ``region`` are read from it if present.
        max_pool_connections: the HTTP pool size (as many as threads sharing the client).
        max_attempts: botocore's own attempts (1 leaves retrying to :func:`call_with_retries`).
    """
    import boto3
    from botocore.config import Config

    section = section or {}
    config = Config(max_pool_connections=max_pool_connections,
                    retries={"mode": "standard", "total_max_attempts": max_attempts})
    with _session_lock:  # creating clients from one session is not thread-safe
        session = boto3.session.Session()
        return session.client(service, endpoint_url=section.get("endpoint_url") or None,
                              region_name=section.get("region") or None, config=config)


NO_REGION = ("no AWS region: set AWS_DEFAULT_REGION (e.g. export AWS_DEFAULT_REGION=us-east-1), "
             "a region in ~/.aws/config, or region in the backend's config table; see "
             "docs/aws.md")
NO_CREDENTIALS = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                  "(or AWS_PROFILE), or run `aws configure`; see docs/aws.md")


def require_region_and_credentials(section: Optional[Mapping[str, Any]] = None) -> str:
    """The region boto3 will use; ConfigError saying what to set when it or the credentials
    are missing (checked up front, so nothing is stored or created first)."""
    import boto3

    from wrencore.errors import ConfigError

    session = boto3.session.Session()
    region = (section or {}).get("region") or session.region_name
    if not region:
        raise ConfigError(NO_REGION)
    if session.get_credentials() is None:
        raise ConfigError(NO_CREDENTIALS)
    return str(region)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if not code and status:
        code = str(status)
    return code


def is_throttling(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(exc) in THROTTLING_CODES or status == 429


def is_transient(exc: BaseException) -> bool:
    """Throttling, a 5xx, or a connection-level failure: worth repeating."""
    from botocore.exceptions import (ConnectionError as BotoConnectionError,
                                     HTTPClientError)

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True
    if is_throttling(exc) or error_code(exc) in TRANSIENT_CODES:
        return True
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return 500 <= int(status) < 600


def backoff_delay(attempt: int, base: float = 0.05, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


def call_with_retries(fn: Callable[[], T], *, retry_for: float = 600.0, base: float = 0.05,
                      cap: float = 5.0, retryable: Callable[[BaseException], bool] = is_transient,
                      what: str = "AWS request",
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it succeeds, retrying retryable errors with backoff and jitter.

    Args:
        fn: the request.
        retry_for: give up (re-raising the last error) after this many seconds of retrying.
        base, cap: the backoff's first and largest ceiling, in seconds.
        retryable: which errors to retry; others are raised at once.
        what: names the request in log messages.
    """
    deadline = time.monotonic() + retry_for
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not retryable(exc) or time.monotonic() >= deadline:
                raise
            delay = min(backoff_delay(attempt, base, cap), max(0.0, deadline - time.monotonic()))
            logger.debug("%s failed (%s), retry %d in %.2f s", what, error_code(exc) or exc,
                         attempt + 1, delay)
            attempt += 1
            sleep(delay)
