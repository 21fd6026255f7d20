"""Faults on the local backend: each case checks that every future ends once, with its own
outcome, in bounded time, and that no process is left behind."""

from __future__ import annotations

import concurrent.futures
import os
import resource
import signal
import subprocess
import time

import pytest

import wrencore
from tests.procs_util import is_gone, wait_until_gone


def _ledger_call(x, ledger, pid_file, stuck_how):
    """Call 0 gets stuck (stopped, or in a long sleep); every call records that it ran."""
    with open(ledger, "a") as f:
        f.write(f"{x}\n")
    if x == 0:
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pid_file + ".tmp", pid_file)  # whole, or not there yet
        if stuck_how == "stopped":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            time.sleep(20)
    return x * 10, os.getpid()


@pytest.mark.parametrize("stuck_how", ["stopped", "long call"])
def test_calls_queued_behind_a_stuck_worker_go_to_the_idle_one(tmp_path, stuck_how):
    ledger, pid_file = str(tmp_path / "ledger"), tmp_path / "stuck.pid"
    executor = wrencore.Executor(backend="local", max_workers=2)
    try:
        futures = executor.map_futures(
            lambda x: _ledger_call(x, ledger, str(pid_file), stuck_how), range(8), chunksize=4)
        # Calls 1-3 were handed to the stuck worker with call 0; the other worker runs them.
        # (On a loaded machine the other worker may take them before call 0 even starts.)
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stuck_pid = int(pid_file.read_text())
        done, not_done = concurrent.futures.wait(futures[1:], timeout=12)
        assert not not_done, f"calls still waiting behind the stuck worker: {not_done}"
        assert all(f.result()[1] != stuck_pid for f in futures[1:])
        if stuck_how == "stopped":
            os.kill(stuck_pid, signal.SIGCONT)
        assert futures[0].result(timeout=30) == (0, stuck_pid)
        assert [f.result()[0] for f in futures] == [10 * x for x in range(8)]
    finally:
        if stuck_how == "stopped" and pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGCONT)  # never leave a stopped worker
        executor.shutdown(wait=True)
    with open(ledger) as f:
        ran = sorted(int(line) for line in f)
    assert ran == list(range(8)), "a call ran twice or not at all"
    wait_until_gone({f.result()[1] for f in futures}, timeout=10)


def _start_orphans():
    """A child the call never waits for, and a grandchild detached from it by a shell."""
    child = subprocess.Popen(["sleep", "300"])
    shell = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
                           capture_output=True, text=True, check=True)
    return os.getpid(), child.pid, int(shell.stdout)


def _start_orphan_then_die():
    child = subprocess.Popen(["sleep", "300"])
    with open(os.environ["ORPHAN_PID_FILE"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    os.kill(os.getpid(), signal.SIGKILL)


def test_processes_a_call_starts_are_gone_after_shutdown():
    with wrencore.Executor(backend="local", max_workers=2) as executor:
        worker, child, grandchild = executor.submit(_start_orphans).result(timeout=30)
        assert executor.submit(os.getpid).result(timeout=30)  # the executor keeps working
        assert not is_gone(child) and not is_gone(grandchild)
    wait_until_gone([worker, child, grandchild], timeout=10)


def test_processes_of_a_crashed_worker_are_gone_with_it(tmp_path):
    pid_file = tmp_path / "orphan"
    with wrencore.Executor(backend="local", max_workers=1,
                           extra_env={"ORPHAN_PID_FILE": str(pid_file)}) as executor:
        doomed = executor.submit(_start_orphan_then_die)
        with pytest.raises(wrencore.WorkerCrashedError):
            doomed.result(timeout=30)
        worker, child = (int(p) for p in pid_file.read_text().split())
        wait_until_gone([worker, child], timeout=10)  # before shutdown, with the worker
        assert executor.submit(os.getpid).result(timeout=30) != worker


def _address_space_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmSize")


def _lower_soft_address_space_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, ((_address_space_mib() + 64) << 20, hard))
    return os.getpid(), soft


def _allocate(mib):
    block = bytearray(mib << 20)
    return os.getpid(), len(block) >> 20, resource.getrlimit(resource.RLIMIT_AS)


def _lower_hard_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 64), min(hard, 64)))
    return os.getpid()


def _file_limit(_):
    return os.getpid(), resource.getrlimit(resource.RLIMIT_NOFILE)


def test_a_lowered_resource_limit_is_restored_before_the_next_call():
    original = resource.getrlimit(resource.RLIMIT_AS)
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        first = executor.submit(_lower_soft_address_space_limit)
        second = executor.submit(_allocate, 256)
        pid, soft_before = first.result(timeout=30)
        assert soft_before == original[0]
        assert second.result(timeout=30) == (pid, 256, original)
    wait_until_gone([pid], timeout=10)


def test_a_worker_whose_hard_limit_was_lowered_is_replaced():
    original = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert original[1] > 64, "this test needs a hard RLIMIT_NOFILE above 64"
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        futures = [executor.submit(_lower_hard_file_limit)] + \
            executor.map_futures(_file_limit, range(4), chunksize=4)
        lowering_pid = futures[0].result(timeout=30)
        later = [f.result(timeout=30) for f in futures[1:]]
    assert all(limits == original for _, limits in later)
    assert all(pid != lowering_pid for pid, _ in later)
    wait_until_gone({lowering_pid} | {pid for pid, _ in later}, timeout=10)


def _change_process_state(directory):
    os.chdir(directory)
    os.environ["LEFT_BEHIND"] = "1"
    os.environ.pop("HOME", None)
    signal.signal(signal.SIGTERM, lambda *a: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.umask(0o077)
    return os.getpid()


def _process_state(_):
    umask = os.umask(0)
    os.umask(umask)
    return (os.getpid(), os.getcwd(), "LEFT_BEHIND" in os.environ, "HOME" in os.environ,
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
            signal.getsignal(signal.SIGINT) is signal.default_int_handler, umask)


def test_cwd_environment_signal_handlers_and_umask_are_restored(tmp_path):
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        baseline = executor.submit(_process_state, 0).result(timeout=30)
        pid = executor.submit(_change_process_state, str(tmp_path)).result(timeout=30)
        after = executor.submit(_process_state, 1).result(timeout=30)
    assert baseline[0] == pid == after[0]  # restored in place, not by a new worker
    assert after == baseline
    wait_until_gone([pid], timeout=10)
