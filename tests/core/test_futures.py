"""Future states as backends see them: claim, cancel, complete once."""

from __future__ import annotations

import concurrent.futures

import pytest

from wrencore.futures import Future, claim


def test_claim_skips_a_cancelled_call_and_wait_sees_it_done():
    cancelled, pending = Future("j", "00000"), Future("j", "00001")
    assert cancelled.cancel()
    done, not_done = concurrent.futures.wait([cancelled], timeout=0)
    assert cancelled in done and not not_done
    assert claim(cancelled) is False
    assert claim(pending) is True
    assert claim(pending) is True  # a requeued call is claimed again without error
    assert not pending.cancel()


def test_a_future_completes_once():
    future = Future("j", "00000")
    assert future._complete(result=1)
    assert not future._complete(result=2)
    assert not future.fail(RuntimeError("late"))
    assert future.result() == 1


def test_fail_reaches_result_with_its_type():
    future = Future("j", "00000")
    future.fail(TimeoutError("too slow"))
    with pytest.raises(TimeoutError, match="too slow"):
        future.result(timeout=1)


def test_logs_of_a_call_without_status_come_from_the_backend_and_cloud_is_explicit():
    from wrencore.errors import WorkerCrashedError, WrenError
    from wrencore.futures import complete_from_status

    asked = []

    def fetch(job_id, call_id):
        asked.append((job_id, call_id))
        return ["call j/00001 started", "WARNING x: before the crash"]

    crashed = Future("j", "00001")
    crashed._fetch_logs = fetch
    assert crashed.logs() == "" and not asked  # not done: nothing asked
    crashed.fail(WorkerCrashedError("the worker died"))
    assert crashed.logs() == "call j/00001 started\nWARNING x: before the crash\n"
    assert crashed.logs(source="status") == ""
    assert asked == [("j", "00001")]

    normal = Future("j", "00002")
    normal._fetch_logs = fetch
    complete_from_status(normal, {"success": True, "result": b"\x80\x04K\x01.",
                                  "stdout": "out\n", "log_records": []}, None, None)
    assert normal.logs() == "out\n" and len(asked) == 1  # its status's output, no fetch
    assert "before the crash" in normal.logs(source="cloud") and len(asked) == 2

    local = Future("j", "00003")
    local._fetch_logs = lambda job_id, call_id: None  # a backend keeping no logs
    with pytest.raises(WrenError, match="keeps no logs"):
        local.logs(source="cloud")
    with pytest.raises(ValueError, match="source"):
        local.logs(source="cloudwatch")
