"""The local backend behaves as ``ProcessPoolExecutor`` where it can (see the README's
"Differences from concurrent.futures" for where it deliberately does not)."""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest

import wrencore
from tests.backend_suite import Box, _double, _wrap
from tests.procs_util import wait_until_gone


def _sleep_and_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def _pid(_=None):
    return os.getpid()


class Counter:
    def __init__(self):
        self.payload = bytearray(1024)

    def add(self, x):
        return x + 1


def _wrencore_threads():
    return [t for t in threading.enumerate() if t.name.startswith("wrencore")]


def _run_script(code, tmp_path, timeout=60):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=str(tmp_path))


# -- shutdown and exit ---------------------------------------------------------------------
def test_shutdown_without_wait_lets_pending_calls_run():
    executor = wrencore.Executor(backend="local", max_workers=1)
    futures = [executor.submit(_sleep_and_pid, 0.3) for _ in range(3)]
    start = time.monotonic()
    executor.shutdown(wait=False)
    assert time.monotonic() - start < 0.25
    pids = [f.result(timeout=30) for f in futures]
    assert len(set(pids)) == 1
    wait_until_gone(pids, timeout=10)


def test_shutdown_without_wait_cancel_futures_cancels_queued_calls():
    executor = wrencore.Executor(backend="local", max_workers=1)
    futures = [executor.submit(_sleep_and_pid, 0.5) for _ in range(4)]
    time.sleep(0.2)
    executor.shutdown(wait=False, cancel_futures=True)
    pid = futures[0].result(timeout=30)
    assert all(f.cancelled() for f in futures[2:])
    wait_until_gone([pid], timeout=10)


def test_a_dropped_executor_finishes_its_calls_then_releases_workers_and_threads():
    before = len(_wrencore_threads())
    executor = wrencore.Executor(backend="local", max_workers=2)
    future = executor.submit(_sleep_and_pid, 0.5)
    del executor
    gc.collect()
    pid = future.result(timeout=30)
    wait_until_gone([pid], timeout=10)
    deadline = time.monotonic() + 10
    while len(_wrencore_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_wrencore_threads()) <= before, _wrencore_threads()


def test_interpreter_exit_waits_and_submit_from_atexit_is_refused(tmp_path):
    proc = _run_script("""if 1:
        import atexit, wrencore
        executor = wrencore.Executor(backend="local", max_workers=1)

        @atexit.register
        def late():
            try:
                executor.submit(pow, 2, 3)
            except RuntimeError as exc:
                print("runtime-error:", exc)

        futures = [executor.submit(pow, 2, i) for i in range(3)]
        futures[-1].add_done_callback(lambda f: print("last result", f.result()))
        """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "last result 4" in proc.stdout
    assert "runtime-error: cannot schedule new futures after interpreter shutdown" in proc.stdout
    assert "BrokenPipeError" not in proc.stderr


def test_ctrl_c_while_waiting_at_exit_cancels_cleanly(tmp_path):
    pid_file = tmp_path / "worker.pid"
    proc = subprocess.Popen([sys.executable, "-c", f"""if 1:
        import os, signal, time
        # As a script started from a terminal: Ctrl-C raises KeyboardInterrupt, whatever
        # SIGINT disposition or mask the test process passed on.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        import wrencore

        def slow(path):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(120)

        executor = wrencore.Executor(backend="local", max_workers=1)
        executor.submit(slow, {str(pid_file)!r})
        queued = [executor.submit(pow, 2, i) for i in range(3)]
        """], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker_pid = int(pid_file.read_text())
    time.sleep(0.3)  # the script has reached its exit wait
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert "interrupted while waiting for calls at exit" in err
    assert "BrokenPipeError" not in err
    wait_until_gone([worker_pid], timeout=10)


# -- map and submit ------------------------------------------------------------------------
@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_rejects_a_chunksize_below_one(chunksize):
    executor = wrencore.Executor(backend="local", max_workers=1)
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        executor.map(_double, [1, 2], chunksize=chunksize)
    start = time.monotonic()
    executor.shutdown()
    assert time.monotonic() - start < 10


def test_map_iterator_drops_each_result_as_it_is_yielded():
    with wrencore.Executor(backend="local", max_workers=2) as executor:
        results = executor.map(_wrap, range(4))
        first = next(results)
        assert isinstance(first, Box)
        ref = weakref.ref(first)
        del first
        # The thread that completed the future may still be running its done callbacks
        # (as in the stdlib), holding it for a moment: the result must go soon after.
        deadline = time.monotonic() + 2
        while ref() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        assert ref() is None, "the map iterator still holds a yielded result"
        assert [b.value for b in results] == [1, 2, 3]


def test_submit_does_not_keep_callables_alive():
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        counter = Counter()
        assert executor.submit(counter.add, 1).result(timeout=30) == 2

        def local_function(x):
            return x

        assert executor.submit(local_function, 3).result(timeout=30) == 3
        refs = [weakref.ref(counter), weakref.ref(local_function)]
        del counter, local_function
        gc.collect()
        assert [r() for r in refs] == [None, None]


def test_submit_reuses_the_job_of_a_live_function():
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        futures = [executor.submit(_double, i) for i in range(3)]
        assert [f.result(timeout=30) for f in futures] == [0, 2, 4]
        assert len({f.job_id for f in futures}) == 1
        assert len({f.call_id for f in futures}) == 3


# -- constructor arguments -----------------------------------------------------------------
def test_max_workers_sets_the_number_of_worker_processes():
    with wrencore.Executor(backend="local", max_workers=3) as executor:
        pids = [f.result(timeout=60) for f in [executor.submit(_sleep_and_pid, 1.0)
                                                 for _ in range(3)]]
    assert len(set(pids)) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"max_workers": 0}, "max_workers must be greater than 0"),
    ({"max_tasks_per_child": 0}, "max_tasks_per_child must be >= 1"),
    ({"mp_context": multiprocessing.get_context("fork")}, "start method 'fork' is not supported"),
])
def test_invalid_pool_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        wrencore.Executor(backend="local", **kwargs)


def test_a_spawn_context_is_accepted():
    with wrencore.Executor(backend="local", max_workers=1,
                           mp_context=multiprocessing.get_context("spawn")) as executor:
        assert executor.submit(_double, 2).result(timeout=30) == 4


def test_max_tasks_per_child_replaces_the_worker():
    with wrencore.Executor(backend="local", max_workers=1, max_tasks_per_child=2) as executor:
        pids = [executor.submit(_pid, i).result(timeout=30) for i in range(6)]
        mapped = [f.result(timeout=30) for f in executor.map_futures(_pid, range(6))]
    assert len(set(pids)) == 3 and [pids.count(p) for p in dict.fromkeys(pids)] == [2, 2, 2]
    assert all(mapped.count(p) <= 2 for p in mapped)
    wait_until_gone(set(pids) | set(mapped), timeout=10)


def test_killed_worker_is_a_broken_process_pool_for_stdlib_code():
    from concurrent.futures.process import BrokenProcessPool

    with wrencore.Executor(backend="local", max_workers=1) as executor:
        doomed = executor.submit(_kill_self)
        with pytest.raises(BrokenProcessPool):
            doomed.result(timeout=30)
        assert executor.submit(_double, 5).result(timeout=30) == 10


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_forked_child_leaves_the_parents_executor_alone():
    # A fork-context ProcessPoolExecutor's workers run the threading exit hooks when they
    # end; wrencore's must not shut down (and kill the workers of) the parent's executor.
    with wrencore.Executor(backend="local", max_workers=2) as ex:
        assert ex.submit(_pid).result(timeout=60)
        workers = _worker_pids(ex)
        workdir = ex.backend.pool.workdir
        with concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("fork")) as forked:
            assert forked.submit(abs, -1).result(timeout=60) == 1
        assert os.path.isdir(workdir)
        assert list(ex.map(_double_it, range(20))) == [2 * x for x in range(20)]
        assert _worker_pids(ex) == workers


def _double_it(x):
    return 2 * x


def _worker_pids(executor):
    return {w.proc.pid for w in executor.backend.pool._workers}
