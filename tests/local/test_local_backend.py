"""The local backend: the shared suite, plus what only a local process pool can show."""

from __future__ import annotations

import os
import signal
import time

import pytest

import wrencore
from tests.backend_suite import BackendSuite, _double, _square, _sum
from wrencore_runtime import layout


@pytest.fixture
def executor():
    with wrencore.Executor(backend="local", config={"local": {"workers": 2}}) as ex:
        yield ex


@pytest.fixture
def backend_spec():
    return "local", {"local": {"workers": 2}}


class TestLocalBackend(BackendSuite):
    pass


def _die_on_three(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return x


def _sleep(seconds):
    time.sleep(seconds)
    return seconds


def _sleep_ignoring_timeouts(seconds):
    try:
        time.sleep(seconds)
    except BaseException:
        time.sleep(seconds)
    return seconds


def test_killed_worker_fails_only_its_call(executor):
    futures = executor.map_futures(_die_on_three, range(12))
    with pytest.raises(wrencore.WorkerCrashedError, match="00003.*died"):
        futures[3].result(timeout=60)
    assert [f.result(timeout=60) for i, f in enumerate(futures) if i != 3] == \
        [x for x in range(12) if x != 3]


def test_call_over_its_timeout_fails_with_timeout_error(executor):
    fast, slow = executor.map_futures(_sleep, [0.05, 30], timeout=1)
    assert fast.result(timeout=60) == 0.05
    with pytest.raises(wrencore.CallTimeoutError, match="timeout of 1 s"):
        slow.result(timeout=60)
    assert executor.submit(_double, 4).result(timeout=60) == 8


def test_call_that_swallows_its_timeout_is_killed(executor):
    start = time.monotonic()
    (future,) = executor.map_futures(_sleep_ignoring_timeouts, [30], timeout=0.5)
    with pytest.raises(wrencore.CallTimeoutError, match="worker process was killed"):
        future.result(timeout=60)
    assert time.monotonic() - start < 10


def test_submit_after_shutdown_is_refused():
    executor = wrencore.Executor(backend="local")
    executor.shutdown()
    with pytest.raises(wrencore.ExecutorShutdownError, match="shut down"):
        executor.submit(_double, 1)
    with pytest.raises(wrencore.ExecutorShutdownError):
        executor.map_futures(_double, [1])


def test_unpicklable_function_fails_at_submit_naming_it(executor):
    import threading

    lock = threading.Lock()

    def holds_a_lock(x):
        with lock:
            return x

    with pytest.raises(wrencore.SerializationError, match="holds_a_lock.*lock"):
        executor.map_futures(holds_a_lock, [1])


def test_non_iterable_iterdata_is_a_type_error():
    with pytest.raises(TypeError, match="iterdata must be an iterable"):
        wrencore.map(_double, 5)


def test_cancel_works_for_calls_not_started():
    with wrencore.Executor(backend="local", config={"local": {"workers": 1}}) as executor:
        futures = [executor.submit(_sleep, 0.5)] + [executor.submit(_double, i) for i in range(3)]
        time.sleep(0.2)
        assert futures[3].cancel()
        assert futures[3].cancelled()
        assert futures[0].result(timeout=60) == 0.5
        assert [f.result(timeout=60) for f in futures[1:3]] == [0, 2]


def test_shutdown_cancel_futures_cancels_queued_calls():
    executor = wrencore.Executor(backend="local", config={"local": {"workers": 1}})
    running = executor.submit(_sleep, 0.5)
    queued = [executor.submit(_sleep, 0.5) for _ in range(4)]
    time.sleep(0.2)
    executor.shutdown(wait=True, cancel_futures=True)
    assert running.result() == 0.5
    assert any(f.cancelled() for f in queued)
    assert all(f.done() for f in queued)


def test_version_mismatch_fails_the_call_saying_which_versions(executor, monkeypatch):
    monkeypatch.setattr("wrencore.executor.SERIALIZER", "cloudpickle 0.0.1")
    future = executor.submit(_double, 2)
    with pytest.raises(wrencore.RuntimeMismatchError, match="cloudpickle 0.0.1 on the client"):
        future.result(timeout=60)


def test_staged_arguments_and_results_use_the_documented_keys():
    config = {"local": {"workers": 1, "args_inline_limit": 100, "result_inline_limit": 100}}
    with wrencore.Executor(backend="local", config=config) as executor:
        (future,) = executor.map_futures(_square, [10 ** 300])
        assert future.result(timeout=60) == 10 ** 600
        keys = executor.storage.list(layout.job_prefix(future.job_id))
        assert layout.args_key(future.job_id, future.call_id) in keys
        assert layout.result_key(future.job_id, future.call_id) in keys
        assert layout.function_key(future.job_id) in keys


def test_cleanup_deletes_job_data():
    executor = wrencore.Executor(backend="local")
    future = executor.submit(_double, 3)
    assert future.result(timeout=60) == 6
    assert executor.storage.list(layout.job_prefix(future.job_id))
    executor.shutdown(cleanup=True)
    assert executor.storage.list(layout.job_prefix(future.job_id)) == []


def test_module_level_api():
    futures = wrencore.map(_double, [1, 2, 3])
    assert wrencore.get_all_results(futures) == [2, 4, 6]
    assert wrencore.call_async(_double, 21).result(timeout=60) == 42
    done, _ = wrencore.wait(futures, return_when=wrencore.FIRST_COMPLETED)
    assert done
    assert wrencore.map_reduce(_square, range(5), _sum).result(timeout=60) == 30


def test_map_reduce_fails_with_the_map_error():
    from tests.backend_suite import _fail_on_seven

    reduced = wrencore.map_reduce(_fail_on_seven, range(9), _sum)
    with pytest.raises(ValueError, match="bad value 7"):
        reduced.result(timeout=60)


def test_get_all_results_honours_timeout():
    futures = wrencore.map(_sleep, [5])
    with pytest.raises(TimeoutError, match="1 of 1 calls unfinished"):
        wrencore.get_all_results(futures, timeout=0.2)
