"""Cancelling calls on the local backend: queued ones never start, running ones are stopped
(their worker is killed and replaced), and Ctrl-C cancels the rest of the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import wrencore
from tests.procs_util import wait_until_gone


def _sleep_recording_pid(directory, seconds):
    path = os.path.join(directory, str(os.getpid()))
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(seconds)
    return seconds


def _wait_for_pids(directory, count, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(name) for name in os.listdir(directory) if name.isdigit()]
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} calls started within {timeout} s")


def test_cancel_stops_a_running_call_and_replaces_its_worker(tmp_path):
    with wrencore.Executor(backend="local", max_workers=1) as ex:
        running = ex.submit(_sleep_recording_pid, str(tmp_path), 60)
        queued = [ex.submit(pow, 2, i) for i in range(3)]
        [pid] = _wait_for_pids(str(tmp_path), 1)
        assert ex.cancel([running, *queued]) == 4
        with pytest.raises(wrencore.CallCancelledError, match="cancelled while it ran"):
            running.result(timeout=10)
        assert all(f.cancelled() or isinstance(f.exception(timeout=10),
                                                wrencore.CallCancelledError) for f in queued)
        wait_until_gone([pid], timeout=10)
        assert ex.submit(pow, 2, 5).result(timeout=30) == 32  # a new worker took its place


def test_cancel_without_running_leaves_started_calls_alone(tmp_path):
    with wrencore.Executor(backend="local", max_workers=1) as ex:
        running = ex.submit(_sleep_recording_pid, str(tmp_path), 0.5)
        _wait_for_pids(str(tmp_path), 1)
        queued = ex.map_futures(abs, range(-5, 0))
        assert ex.cancel([running, *queued], running=False) == len(queued)
        assert all(f.cancelled() or isinstance(f.exception(timeout=10),
                                               wrencore.CallCancelledError) for f in queued)
        assert running.result(timeout=30) == 0.5


def test_cancel_ignores_done_futures_and_other_executors():
    with wrencore.Executor(backend="local", max_workers=1) as ex, \
            wrencore.Executor(backend="local", max_workers=1) as other:
        done = ex.submit(abs, -1)
        assert done.result(timeout=30) == 1
        foreign = other.submit(abs, -2)
        assert ex.cancel([done, foreign]) == 0
        assert foreign.result(timeout=30) == 2


# -- Ctrl-C --------------------------------------------------------------------------------

_WAITS = {
    "get_all_results": "wrencore.get_all_results(futures)",
    "wait": "wrencore.wait(futures)",
    "as_completed": "for f in wrencore.as_completed(futures): pass",
    "Executor.map": "list(executor.map(slow, [d] * 6))",
}


def ctrl_c_script(wait_code: str, directory: str, backend_lines: str) -> str:
    return f"""if 1:
        import os, signal, sys, time
        # As a script started from a terminal: Ctrl-C raises KeyboardInterrupt, whatever
        # SIGINT disposition or mask the test process passed on.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        import wrencore

        def slow(directory):
            path = os.path.join(directory, str(os.getpid()))
            with open(path + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(path + ".tmp", path)
            time.sleep(120)

        {backend_lines}
        d = {directory!r}
        futures = [] if "executor.map" in {wait_code!r} else executor.map_futures(slow, [d] * 6)
        try:
            {wait_code}
        except KeyboardInterrupt:
            print("KeyboardInterrupt reached the script", flush=True)
            print(sum(f.cancelled() or isinstance(f.exception(), wrencore.CallCancelledError)
                      for f in futures), flush=True)
        """


def run_and_interrupt(script: str, directory, started: int, timeout: float = 60):
    """Run ``script``, send it SIGINT once ``started`` calls run; return (stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=str(directory))
    try:
        _wait_for_pids(str(directory), started, timeout=timeout)
        time.sleep(0.3)  # the script is blocked waiting
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("how", list(_WAITS))
def test_ctrl_c_cancels_the_rest_of_the_job(tmp_path, how):
    script = ctrl_c_script(
        _WAITS[how], str(tmp_path),
        'executor = wrencore.Executor(backend="local", max_workers=2)')
    out, err = run_and_interrupt(script, tmp_path, started=2)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrencore: interrupted; cancelled "), err
    assert lines[0] == "wrencore: interrupted; cancelled 6 calls", err  # 2 running, 4 queued
    assert "KeyboardInterrupt reached the script" in out
    if how != "Executor.map":
        assert int(out.split()[-1]) == 6  # every call of the job ended cancelled
    worker_pids = [int(name) for name in os.listdir(tmp_path) if name.isdigit()]
    wait_until_gone(worker_pids, timeout=10)
