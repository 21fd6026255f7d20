"""Retry helper shared by the AWS backends: backoff with jitter for throttling only."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from wrencore_aws.clients import backoff_delay, call_with_retries, is_throttling, is_transient


def _client_error(code, status):
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "Invoke")


def test_throttling_is_retried_until_it_passes():
    attempts, sleeps = [], []

    def request():
        attempts.append(1)
        if len(attempts) < 4:
            raise _client_error("TooManyRequestsException", 429)
        return "ok"

    assert call_with_retries(request, sleep=sleeps.append) == "ok"
    assert len(attempts) == 4 and len(sleeps) == 3
    assert all(0 <= s <= 0.05 * 2 ** i for i, s in enumerate(sleeps))


def test_client_errors_are_not_retried():
    attempts = []

    def request():
        attempts.append(1)
        raise _client_error("InvalidParameterValueException", 400)

    with pytest.raises(ClientError):
        call_with_retries(request, sleep=lambda s: None)
    assert len(attempts) == 1


def test_retrying_stops_after_retry_for():
    with pytest.raises(ClientError):
        call_with_retries(lambda: (_ for _ in ()).throw(_client_error("SlowDown", 503)),
                          retry_for=0.2, base=0.01, cap=0.02)


def test_classification_and_jitter_bounds():
    assert is_throttling(_client_error("Whatever", 429))
    assert is_transient(_client_error("ServiceException", 500))
    assert not is_transient(_client_error("ResourceNotFoundException", 404))
    assert all(0 <= backoff_delay(a, 0.1, 1.0) <= 1.0 for a in range(40))
