"""Repeat a botocore operation at a fraction of its client CPU, by re-signing its first request.

A botocore call spends half a millisecond or more of CPU on work that is the same for every
request of an operation on one resource: resolving the endpoint, serializing the
parameters, building the user agent, the general-purpose SigV4 over its header classes.
:class:`Resender` lets botocore make the first request for each key (a Lambda function, a
queue URL) as usual and keeps the request it sent: its URL and headers, and the region and
name it was signed for. Every later request for that key copies it with its own body,
signs it with :class:`SigV4` from the client's credentials (refreshed as botocore refreshes
them) and sends it on the client's own HTTP session, so endpoint configuration
(``AWS_ENDPOINT_URL``…), the connection pool, proxies and TLS settings are the client's.
What stays as it was:

* each request emits the client's ``before-call`` event of the operation, as botocore does,
  so request counters see every request, and a handler that answers with a response (as
  botocore's Stubber does) is used instead of sending;
* responses are parsed by the client's own parser, and ``after-call`` is emitted with them;
* on an error, either the request is made again through botocore (``errors="botocore"``:
  its retries, error classes and messages are botocore's) or the error is parsed by the
  client's parser and raised as the exception botocore would raise (``errors="raise"``).

A key stays on botocore when its first request is not plainly SigV4-signed over an
in-memory body, when the body the caller would send is not byte for byte the one botocore
serialized, or when this module's signature of that request is not botocore's.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import threading
import uuid
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

logger = logging.getLogger(__name__)

#: Headers botocore adds per request, or after signing; never copied from the template.
_PER_REQUEST = frozenset({"authorization", "x-amz-date", "x-amz-security-token",
                          "content-length", "amz-sdk-invocation-id", "amz-sdk-request",
                          "x-amz-content-sha256", "expect", "transfer-encoding"})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Template:
    """The request botocore built for one key of an operation, minus what changes per request."""

    def __init__(self, url: str, headers: Dict[str, str], region: str, signing_name: str):
        from urllib.parse import quote, urlsplit

        from botocore.auth import SIGNED_HEADERS_BLACKLIST, _host_from_url
        from botocore.utils import normalize_url_path

        self.url = url
        self.headers = headers
        self.region = region
        self.signing_name = signing_name
        self.host = _host_from_url(url)
        parts = urlsplit(url)
        self.path = parts.path
        self.canonical_uri = quote(normalize_url_path(parts.path), safe="/~")
        self.canonical_query = parts.query  # always empty: a query would need sorting
        self.unsigned = frozenset(SIGNED_HEADERS_BLACKLIST)


class SigV4:
    """AWS Signature Version 4 of a request whose shape is fixed, from refreshable credentials.

    The same algorithm as botocore's ``SigV4Auth`` (a test holds the two to the same
    signature), without its per-request URL parsing and header classes; the signing key is
    derived once a day per secret key.
    """

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials
        self._keys: Dict[Tuple[str, str, str, str], bytes] = {}

    def _key(self, secret: str, day: str, region: str, service: str) -> bytes:
        cache_key = (secret, day, region, service)
        key = self._keys.get(cache_key)
        if key is None:
            key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (region, service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {cache_key: key}  # one day's key is all that is needed
        return key

    def sign(self, template: Template, headers: Dict[str, str], body: bytes,
             now: Optional[datetime.datetime] = None) -> None:
        """Add ``X-Amz-Date``, the session token if any, and ``Authorization`` to ``headers``."""
        from botocore.exceptions import NoCredentialsError

        if self.credentials is None:
            raise NoCredentialsError()
        frozen = self.credentials.get_frozen_credentials()
        now = now or datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers["X-Amz-Date"] = stamp
        if frozen.token:
            headers["X-Amz-Security-Token"] = frozen.token
        signed = {"host": template.host}
        for name, value in headers.items():
            lower = name.lower()
            if lower not in template.unsigned and not lower.startswith("amz-sdk-"):
                signed[lower] = " ".join(value.split())
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join((
            "POST", template.canonical_uri, template.canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names), signed_names,
            hashlib.sha256(body).hexdigest()))
        scope = f"{day}/{template.region}/{template.signing_name}/aws4_request"
        to_sign = "\n".join(("AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()))
        key = self._key(frozen.secret_key, day, template.region, template.signing_name)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
                                    f"SignedHeaders={signed_names}, Signature={signature}")


class Resender:
    """Sends one operation of ``client`` cheaply after each key's first request.

    Args:
        client: the boto3 client whose endpoint, credentials, events, parser and HTTP
            session are used.
        operation_name: the operation's API name (``"Invoke"``, ``"ReceiveMessage"``).
        errors: ``"botocore"`` to make a failed request again through botocore (for
            operations safe to repeat), ``"raise"`` to raise botocore's exception for it.
        parse: whether a successful response is parsed (else :meth:`call` returns None).
    """

    def __init__(self, client: Any, operation_name: str, *, errors: str = "raise",
                 parse: bool = True) -> None:
        if errors not in ("botocore", "raise"):
            raise ValueError(f"errors must be 'botocore' or 'raise', not {errors!r}")
        self.client = client
        self.operation_name = operation_name
        self.errors = errors
        self.parse = parse
        self.model = client.meta.service_model.operation_model(operation_name)
        service_id = client.meta.service_model.service_id.hyphenize()
        self._before_call = f"before-call.{service_id}.{operation_name}"
        self._after_call = f"after-call.{service_id}.{operation_name}"
        self._signer = SigV4(client._get_credentials())
        self.templates: Dict[Hashable, Optional[Template]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        client.meta.events.register(f"before-send.{service_id}.{operation_name}",
                                    self._capture)

    def call(self, key: Hashable, body: bytes, botocore_call: Callable[[], Any]) -> Any:
        """Send ``body`` as the request for ``key``; ``botocore_call()`` makes the same
        request through botocore (it is used for the first request of a key, and for
        errors with ``errors="botocore"``).

        Returns:
            The parsed response (as botocore's), or None if not ``parse``; what
            ``botocore_call`` returns when it is used.

        Raises:
            botocore.exceptions.ClientError: the service refused it (botocore's subclass).
            botocore.exceptions.HTTPClientError: the request failed on the way.
        """
        template = self.templates.get(key)
        if template is None:
            return self._through_botocore(key, body, botocore_call)
        from botocore.exceptions import HTTPClientError

        headers = dict(template.headers)
        headers["amz-sdk-invocation-id"] = str(uuid.uuid4())
        context = {"client_region": self.client.meta.region_name}
        params = {"url_path": template.path, "query_string": "", "method": "POST",
                  "headers": headers, "body": body, "url": template.url, "context": context}
        _, answer = self.client.meta.events.emit_until_response(
            self._before_call, model=self.model, params=params,
            request_signer=self.client._request_signer, context=context)
        if answer is not None:  # a handler stood in for the service
            http, parsed = answer
        else:
            headers, body = params["headers"], params["body"]  # as handlers left them
            self._signer.sign(template, headers, body)
            try:
                http, parsed = self._send(template, headers, body)
            except HTTPClientError:
                if self.errors == "botocore":
                    return botocore_call()
                raise
            if http.status_code >= 300 and self.errors == "botocore":
                return botocore_call()
        if parsed is not None:
            self.client.meta.events.emit(self._after_call, http_response=http, parsed=parsed,
                                         model=self.model, context=context)
        if http.status_code >= 300:
            error = (parsed or {}).get("Error") or {}
            code = context.get("error_code_override") or error.get("Code")
            raise self.client.exceptions.from_code(code)(parsed, self.operation_name)
        return parsed

    def _through_botocore(self, key: Hashable, body: bytes,
                          botocore_call: Callable[[], Any]) -> Any:
        self._local.capturing = (key, body)
        try:
            return botocore_call()
        finally:
            self._local.capturing = None

    def _capture(self, request: Any, **_: Any) -> None:
        """Keep the first request botocore sends for a key as that key's template
        (``before-send``; returning None lets botocore send it)."""
        capturing = getattr(self._local, "capturing", None)
        if capturing is None:
            return
        self._local.capturing = None  # a retry of the same request is no template
        key, body = capturing
        with self._lock:
            if key in self.templates:
                return
            try:
                template = self.template(request, key, body)
            except Exception as exc:  # never fail the request botocore is sending
                logger.warning("%s of %s stays on botocore: %s", self.operation_name, key, exc)
                template = None
            self.templates[key] = template

    def template(self, request: Any, key: Hashable, body: bytes) -> Optional[Template]:
        """The template made of ``request`` (botocore's, for ``key``), or None if requests
        for ``key`` must stay on botocore: ``body`` (what :meth:`call` would send) is not
        the request's body, or the request's signature cannot be reproduced."""
        from botocore.awsrequest import AWSPreparedRequest

        what = f"{self.operation_name} of {key}"
        headers = {_text(k): _text(v) for k, v in request.headers.items()}
        authorization = headers.get("Authorization", "")
        signing = (getattr(request, "context", None) or {}).get("signing") or {}
        region = signing.get("region") or self.client.meta.region_name
        signing_name = signing.get("signing_name") or self.model.service_model.signing_name
        # Only a request signed with plain SigV4 over an in-memory body can be re-signed here.
        if (not isinstance(request, AWSPreparedRequest) or request.method != "POST"
                or not authorization.startswith("AWS4-HMAC-SHA256 ")
                or f"/{region}/{signing_name}/aws4_request" not in authorization
                or not isinstance(request.body, (bytes, bytearray))
                or "/." in request.url.split("?", 1)[0] or "?" in request.url):
            logger.debug("%s stays on botocore: its request is not one this module can "
                         "re-sign", what)
            return None
        if bytes(request.body) != body:
            logger.warning("%s stays on botocore: its body is not the one botocore "
                           "serialized", what)
            return None
        kept = {k: v for k, v in headers.items() if k.lower() not in _PER_REQUEST}
        template = Template(request.url, kept, region, signing_name)
        # What the service will check: this module's signature of the request botocore sent
        # must be botocore's, or this key stays on botocore.
        check = dict(kept)
        stamp = datetime.datetime.strptime(headers.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ")
        self._signer.sign(template, check, bytes(request.body),
                          now=stamp.replace(tzinfo=datetime.timezone.utc))
        if check["Authorization"] != authorization:
            logger.warning("%s stays on botocore: its request's signature could not be "
                           "reproduced", what)
            return None
        return template

    def _send(self, template: Template, headers: Dict[str, str],
              body: bytes) -> Tuple[Any, Optional[Dict[str, Any]]]:
        from botocore.awsrequest import AWSPreparedRequest

        # A plain dict: the header names are botocore's own, so no case-folding is needed.
        request = AWSPreparedRequest("POST", template.url, headers, body, stream_output=False)
        http = self.client._endpoint.http_session.send(request)
        content = http.content  # read in full: the connection goes back to the pool
        if http.status_code < 300 and not self.parse:
            return http, None
        parsed = self.client._response_parser.parse(
            {"headers": http.headers, "status_code": http.status_code, "body": content,
             "context": {"operation_name": self.operation_name}},
            self.model.output_shape)
        metadata = parsed.setdefault("ResponseMetadata", {})
        metadata["HTTPStatusCode"] = http.status_code
        metadata.setdefault("HTTPHeaders", http.headers)
        return http, parsed
