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


def test_a_future_sets_what_the_stdlib_future_sets():
    # wrencore.Future.__init__ does the stdlib's work itself (with a leaner condition); a
    # Python whose Future gains an attribute must not leave ours without it.
    stdlib = set(vars(concurrent.futures.Future()))
    assert stdlib <= set(vars(Future("j", "00000")))


def test_waiting_threads_are_woken_and_a_stray_notify_still_raises():
    import threading

    future = Future("j", "00000")
    results = []
    waiters = [threading.Thread(target=lambda: results.append(future.result(timeout=10)))
               for _ in range(3)]
    for thread in waiters:
        thread.start()
    done, _ = concurrent.futures.wait([future], timeout=0.05)
    assert not done
    assert claim(future)
    assert future._complete(result=7)
    for thread in waiters:
        thread.join(10)
    assert results == [7, 7, 7]
    with pytest.raises(RuntimeError, match="un-acquired"):
        Future("j", "00001")._condition.notify_all()
    with pytest.raises(concurrent.futures.TimeoutError):
        Future("j", "00002").result(timeout=0.01)


def test_racing_outcomes_complete_a_future_once_with_one_of_them():
    import threading

    for _ in range(50):
        future = Future("j", "00000")
        wins = []
        start = threading.Barrier(4)

        def complete(value):
            start.wait()
            if value % 2:
                wins.append((value, future.fail(RuntimeError(str(value)))))
            else:
                wins.append((value, future._complete(result=value)))

        threads = [threading.Thread(target=complete, args=(v,)) for v in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        winners = [value for value, won in wins if won]
        assert len(wins) == 4 and len(winners) == 1  # the losers were told, not raised at
        if winners[0] % 2:
            assert str(future.exception()) == str(winners[0])
        else:
            assert future.result() == winners[0]


def test_a_cancelled_future_is_not_completed_by_a_late_outcome():
    future = Future("j", "00000")
    assert future.cancel()
    assert not future._complete(result=1)
    assert not future.fail(RuntimeError("late"))
    assert future.cancelled()
