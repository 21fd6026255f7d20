"""Future states as backends see them: claim, cancel, complete once."""

from __future__ import annotations

import concurrent.futures
import time

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
    # (``_waiters`` and ``_done_callbacks`` are made when first used: see the next test.)
    ours = Future("j", "00000")
    for name in vars(concurrent.futures.Future()):
        assert hasattr(ours, name), name
    assert ours._waiters == [] and ours._done_callbacks == []


def test_a_future_makes_its_waiter_and_callback_lists_only_when_used():
    import gc

    plain = Future("j", "00000")
    assert claim(plain) and plain._complete(result=1)
    assert plain.result() == 1
    # Only the future and its condition are tracked by the cyclic collector: no lists.
    assert not [o for o in gc.get_referents(plain) if isinstance(o, list)]
    assert "_waiter_list" not in vars(plain) and "_callback_list" not in vars(plain)

    # Used, they behave as the stdlib's: callbacks run once, waiters are told.
    watched, seen = Future("j", "00001"), []
    watched.add_done_callback(seen.append)
    cancelled = Future("j", "00002")
    waiting = concurrent.futures.ThreadPoolExecutor(1).submit(
        concurrent.futures.wait, [watched, cancelled], return_when="ALL_COMPLETED")
    deadline = time.monotonic() + 10
    while not (watched._waiter_list and cancelled._waiter_list):
        assert time.monotonic() < deadline, "wait() installed no waiters"
        time.sleep(0.005)
    assert cancelled.cancel()
    assert claim(watched) and watched._complete(exception=ValueError("x"))
    done, not_done = waiting.result(timeout=10)
    assert done == {watched, cancelled} and not not_done
    assert seen == [watched]
    assert cancelled.cancelled()


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


class _Tracker:
    def __init__(self):
        self.calls = []

    def finished(self, future):
        assert future.done()
        self.calls.append(("one", future.call_id))

    def finished_many(self, futures):
        assert all(f.done() for f in futures)
        self.calls.append(("many", [f.call_id for f in futures]))


def test_a_reported_batch_completes_each_future_once_and_tells_its_tracker_once():
    import pickle

    from wrencore.errors import DeserializationError
    from wrencore.futures import complete_from_results

    tracker = _Tracker()
    futures = [Future("j", f"0000{i}") for i in range(5)]
    for future in futures:
        future._tracker = tracker
    for future in futures[:4]:
        assert claim(future)
    seen = []
    futures[1].add_done_callback(lambda f: seen.append((f.call_id, f.result())))
    waiting = concurrent.futures.ThreadPoolExecutor(1).submit(
        concurrent.futures.wait, [futures[1]])
    deadline = time.monotonic() + 10
    while not futures[1]._waiter_list:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert futures[3]._complete(result="earlier")  # done before its report arrives
    assert futures[4].cancel()  # never ran

    keys = ("worker_start_timestamp", "worker_func_time")
    batch = [(f, pickle.dumps(i * 10) if i != 2 else b"not a pickle", (100.0 + i, 0.5), 0)
             for i, f in enumerate(futures)]
    complete_from_results(batch, keys, received=200.0, constants={"worker_pid": 7})

    assert [futures[i].result() for i in (0, 1)] == [0, 10]
    assert futures[0].metadata["worker_start_timestamp"] == 100.0
    assert futures[1].metadata["worker_pid"] == 7
    assert futures[0].metadata["host_status_timestamp"] == 200.0
    with pytest.raises(DeserializationError, match="could not be unpickled"):
        futures[2].result()
    assert futures[3].result() == "earlier" and futures[4].cancelled()
    assert seen == [("00001", 10)]
    done, _ = waiting.result(timeout=10)
    assert done == {futures[1]}
    # The two completed by the batch's own path together, the others each once.
    assert sorted(tracker.calls, key=repr) == sorted(
        [("many", ["00000", "00001"]), ("one", "00002"), ("one", "00003"), ("one", "00004")],
        key=repr)


def test_get_all_results_waits_for_every_future_without_installing_waiters():
    import threading

    import wrencore

    futures = [Future("j", f"0000{i}") for i in range(5)]

    def finish_in_reverse():
        for i in reversed(range(5)):
            time.sleep(0.01)
            assert claim(futures[i])
            if i == 3:
                futures[i]._complete(exception=ValueError("call 3 failed"))
            else:
                futures[i]._complete(result=i * 10)

    threading.Thread(target=finish_in_reverse).start()
    with pytest.raises(ValueError, match="call 3 failed"):  # the first failure in order ...
        wrencore.get_all_results(futures, timeout=30, progress=False)
    assert all(f.done() for f in futures)  # ... raised once every call had finished
    assert all(f._waiter_list is None for f in futures)  # no stdlib waiter on any of them

    pending = [Future("j", f"0001{i}") for i in range(5)]
    for i in (0, 2, 4):
        assert claim(pending[i]) and pending[i]._complete(result=i)
    with pytest.raises(TimeoutError, match="2 of 5 calls unfinished after 0.1 s"):
        wrencore.get_all_results(pending, timeout=0.1, progress=False)
    assert pending[1].cancel() and claim(pending[3]) and pending[3]._complete(result=3)
    with pytest.raises(concurrent.futures.CancelledError):
        wrencore.get_all_results(pending, timeout=30, progress=False)
