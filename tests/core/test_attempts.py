"""The retry and backup policies in isolation: what is retried, the backoff, the knobs and
their checks, and the per-attempt storage keys."""

from __future__ import annotations

import pytest

import wrencore
from wrencore.attempts import (
    RetryPolicy,
    SpeculationPolicy,
    is_infrastructure_failure,
)
from wrencore.errors import (
    CallTimeoutError,
    InitializerError,
    StatusError,
    StorageError,
    WorkerCrashedError,
)
from wrencore_aws_lambda.backend import InvocationError, LostCallError
from wrencore_runtime import layout


def test_only_infrastructure_failures_are_retried_by_default():
    policy = RetryPolicy(retries=2)
    for error in (WorkerCrashedError("died"), LostCallError("lost"),
                  StorageError("slow", transient=True), InvocationError("throttled")):
        assert is_infrastructure_failure(error) and policy.wants(error), error
    for error in (ValueError("user"), StorageError("NoSuchBucket", transient=False),
                  CallTimeoutError("slow call"), InitializerError("init"),
                  StatusError("corrupt")):
        assert not policy.wants(error), error


@pytest.mark.parametrize("retry_on, error, wanted", [
    (ValueError, ValueError("x"), True),
    (ValueError, KeyError("x"), False),
    ((KeyError, ValueError), KeyError("x"), True),
    (True, ZeroDivisionError(), True),
    (lambda exc: "again" in str(exc), RuntimeError("try again"), True),
    (lambda exc: "again" in str(exc), RuntimeError("never"), False),
])
def test_user_exceptions_are_retried_only_when_asked(retry_on, error, wanted):
    assert RetryPolicy(retries=1, retry_on=retry_on).wants(error) is wanted


def test_a_failing_predicate_means_no_retry():
    assert not RetryPolicy(retries=1, retry_on=lambda exc: 1 / 0).wants(ValueError())


def test_retry_on_of_the_wrong_kind_is_refused():
    with pytest.raises(TypeError, match="retry_on must be"):
        RetryPolicy(retries=1, retry_on="ValueError")


def test_backoff_doubles_with_jitter_up_to_its_cap():
    policy = RetryPolicy(retries=9, backoff=0.1, backoff_cap=0.5)
    delays = [[policy.delay(n) for _ in range(200)] for n in range(5)]
    for n, samples in enumerate(delays):
        ceiling = min(0.5, 0.1 * 2 ** n)
        assert all(ceiling / 2 <= d <= ceiling for d in samples)
        assert len(set(samples)) > 100  # jittered, not a fixed wait


def test_retries_and_speculation_come_from_the_config_and_are_checked(monkeypatch):
    with pytest.raises(wrencore.ConfigError,
                       match=r"retries = -1 \(from the retries argument\) must be at least 0"):
        wrencore.Executor(backend="local", retries=-1)
    monkeypatch.setenv("WRENCORE_RETRIES", "many")
    with pytest.raises(wrencore.ConfigError,
                       match=r"retries = 'many' \(from environment variable WRENCORE_RETRIES\)"):
        wrencore.Executor(backend="local")
    monkeypatch.setenv("WRENCORE_RETRIES", "3")
    monkeypatch.setenv("WRENCORE_SPECULATION", "yes")
    monkeypatch.setenv("WRENCORE_SPECULATION_MULTIPLE", "4")
    with wrencore.Executor(backend="local") as executor:
        assert executor.retry_policy.retries == 3
        assert executor.speculation == SpeculationPolicy(multiple=4.0)
    with wrencore.Executor(backend="local", speculation=False) as executor:
        assert executor.speculation is None
    with pytest.raises(wrencore.ConfigError,
                       match=r"speculation_fraction = 2 .*must be between 0.0 and 1.0"):
        wrencore.Executor(backend="local", speculation=False,
                          config={"speculation_fraction": 2})


def test_every_attempt_has_its_own_keys_and_the_first_keeps_the_plain_names():
    assert layout.status_key("j", "00003") == "j/00003/status.json"
    assert layout.status_key("j", "00003", 2) == "j/00003/status.2.json"
    assert layout.result_key("j", "00003", 2) == "j/00003/result.2.pickle"
    assert layout.batch_status_key("j", "00003", 1) == "j/00003/batch-status.1.json"
    assert layout.parse_status_key("p/j/00003/status.json") == ("00003", 0)
    assert layout.parse_status_key("p/j/00003/status.12.json") == ("00003", 12)
    for other in ("j/00003/result.pickle", "j/00003/status.x.json", "j/00003/status.01.json",
                  "j/00003/batch-status.json", "j/status.json"):
        assert layout.parse_status_key(other) is None, other
    assert layout.attempt_of_batch_status_key("j/00003/batch-status.1.json") == 1
    assert layout.is_batch_status_key("j/00003/batch-status.json")
    assert not layout.is_batch_status_key("j/00003/status.json")
