"""Local workers forked from the client's fork server (``wrencore_local.zygote``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import wrencore
from tests.procs_util import is_gone, wait_until_gone
from wrencore.errors import WorkerCrashedError


def _who(_=None):
    import sys as worker_sys

    return (os.getpid(), os.getppid(), os.getpgid(0), os.getsid(0), os.getcwd(),
            os.environ.get("WRENCORE_FORK_SERVER_TEST"), "tests.local.test_fork_server"
            in worker_sys.modules)


def _kill_myself(_=None):
    os.kill(os.getpid(), signal.SIGKILL)


def test_workers_of_each_new_executor_are_forked_clean_by_one_server():
    with wrencore.Executor(backend="local", max_workers=1) as first:
        pid1, server1, pgid1, sid1, cwd1, _, _ = first.submit(_who).result(timeout=60)
    with wrencore.Executor(backend="local", max_workers=1) as second:
        pid2, server2, pgid2, sid2, cwd2, _, has_client_module = \
            second.submit(_who).result(timeout=60)
        workdir = second.backend.pool.workdir
    assert server1 == server2 != os.getpid()  # forked by the same warm server, not by us
    assert pid1 != pid2
    assert (pgid1, pgid2) == (pid1, pid2)  # each leads its own process group ...
    assert sid2 == server2 != os.getsid(0)  # ... in the server's session, not the terminal's
    assert os.path.realpath(cwd2) == os.path.realpath(workdir)
    assert not has_client_module  # nothing of the client's state: a clean interpreter
    wait_until_gone([pid1, pid2], timeout=10)
    assert not is_gone(server1)  # the server stays for the next executor


def test_a_changed_environment_gets_a_server_started_in_it(monkeypatch):
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        server1 = executor.submit(_who).result(timeout=60)[1]
    monkeypatch.setenv("WRENCORE_FORK_SERVER_TEST", "seen")
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        _, server2, _, _, _, value, _ = executor.submit(_who).result(timeout=60)
    assert value == "seen"
    assert server2 != server1
    wait_until_gone([server1], timeout=10)  # the old server, unused, exits


def test_a_forked_worker_killed_by_a_signal_fails_its_call_and_is_replaced():
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        future = executor.submit(_kill_myself)
        with pytest.raises(WorkerCrashedError, match=r"exit code -9"):
            future.result(timeout=60)
        assert executor.submit(_who).result(timeout=60)[0] > 0


def test_fork_server_false_starts_workers_as_new_interpreters():
    config = {"local": {"workers": 1, "fork_server": False}}
    with wrencore.Executor(backend="local", config=config) as executor:
        pid, parent, pgid, sid, _, _, _ = executor.submit(_who).result(timeout=60)
    assert parent == os.getpid()
    assert pgid == sid == pid


def test_the_server_exits_with_the_client(tmp_path):
    code = (
        "import os, wrencore\n"
        "def who(_):\n"
        "    return os.getppid()\n"
        "ex = wrencore.Executor(backend='local', max_workers=2)\n"
        "print(ex.submit(who, 1).result(timeout=60), flush=True)\n"
        "ex.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    server = int(out.stdout.strip())
    wait_until_gone([server], timeout=10)


def test_a_shut_down_executor_leaves_no_fork_server_thread():
    with wrencore.Executor(backend="local", max_workers=2) as executor:
        executor.submit(_who).result(timeout=60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            t.name == "wrencore-local-forkserver" for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "wrencore-local-forkserver"]


def test_the_worker_imports_no_client_or_environment_machinery():
    # What a worker (and the fork server) imports before its first call: kept small.
    code = ("import sys\n"
            "import wrencore_local.worker\n"
            "heavy = {'concurrent.futures.process', 'importlib.metadata', 'multiprocessing',\n"
            "         'wrencore_runtime.environment', 'wrencore'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_a_worker_killed_before_its_fork_is_reported_dies_when_it_is():
    from wrencore_local.backend import kill_process_group
    from wrencore_local.zygote import ForkedWorker

    kill_process_group(0)  # a fork never reported has pid 0: never our own group
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               start_new_session=True)
    try:
        with open(os.devnull, "wb") as stdin, open(os.devnull, "rb") as stdout:
            worker = ForkedWorker(stdin, stdout)
            worker.kill_group()  # asked while the server has not reported the fork
            assert sleeper.poll() is None
            worker._set_pid(sleeper.pid)  # the report: the kill goes out now
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_fork_server_that_dies_before_forking_leaves_workers_started_as_interpreters(
        monkeypatch, caplog):
    from wrencore_local import zygote

    monkeypatch.setattr(zygote, "SERVER_CODE", "raise SystemExit(3)")
    monkeypatch.setenv("WRENCORE_FORK_SERVER_TEST", "broken")  # a server of its own
    with caplog.at_level("WARNING", logger="wrencore_local.backend"):
        with wrencore.Executor(backend="local", max_workers=2) as executor:
            parents = {executor.submit(_who).result(timeout=60)[1] for _ in range(4)}
    assert parents == {os.getpid()}  # Popen workers, children of this process
    assert "fork server unavailable" in caplog.text


def test_a_call_is_timed_from_when_its_worker_runs_not_from_when_it_was_sent(monkeypatch):
    from wrencore_local import zygote

    # A server that takes longer to start than the call's timeout plus the kill grace.
    monkeypatch.setattr(zygote, "SERVER_CODE", "import time; time.sleep(1.5); "
                        + zygote.SERVER_CODE)
    monkeypatch.setenv("WRENCORE_FORK_SERVER_TEST", "slow")
    with wrencore.Executor(backend="local", max_workers=1, timeout=0.3) as executor:
        assert executor.submit(_who).result(timeout=60)[6] is False
        assert executor.backend.pool._next_index == 1  # its worker was not killed and replaced


def test_the_fork_server_starts_before_the_config_is_checked(monkeypatch):
    from wrencore import settings
    from wrencore_local import zygote

    monkeypatch.setenv("WRENCORE_FORK_SERVER_TEST", "early")  # a server of its own
    servers_at_check = []
    check = settings.check

    def noting_check(*args, **kwargs):
        servers_at_check.append([key for key in zygote._servers
                                 if ("WRENCORE_FORK_SERVER_TEST", "early") in key[2]])
        return check(*args, **kwargs)

    monkeypatch.setattr(settings, "check", noting_check)
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        server = executor.submit(_who).result(timeout=60)[1]
    assert servers_at_check and servers_at_check[0]  # started from the unchecked config
    assert zygote._servers[servers_at_check[0][0]].proc.pid == server


def test_a_bad_config_still_fails_the_executor_after_an_early_prepare(monkeypatch):
    monkeypatch.setenv("WRENCORE_LOCAL__FORK_SERVER", "maybe")
    with pytest.raises(wrencore.errors.ConfigError, match="WRENCORE_LOCAL__FORK_SERVER"):
        wrencore.Executor(backend="local")
    monkeypatch.delenv("WRENCORE_LOCAL__FORK_SERVER")
    with pytest.raises(wrencore.errors.UnknownNameError, match="local"):
        wrencore.Executor(backend="locl")


def _collector(_=None):
    import gc

    return gc.isenabled(), gc.get_threshold()


def test_a_forked_worker_collects_cycles_as_a_worker_started_as_an_interpreter_does():
    # The server turns the cyclic collector off while it imports; its workers run with it on.
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        forked = executor.submit(_collector).result(timeout=60)
    config = {"local": {"workers": 1, "fork_server": False}}
    with wrencore.Executor(backend="local", config=config) as executor:
        started = executor.submit(_collector).result(timeout=60)
    assert forked == started
    assert forked[0] is True


def _has_cloudpickle(_=None):
    import sys as worker_sys

    return "cloudpickle" in worker_sys.modules


class _ByValue:
    """A class defined here, sent by value: rebuilding it needs cloudpickle."""


def _by_value_instance(_=None):
    return _ByValue()


def test_cloudpickle_waits_for_the_first_fork_then_every_worker_has_it(monkeypatch):
    # A server of its own (its environment differs), so none preloaded by another test.
    monkeypatch.setenv("WRENCORE_FORK_SERVER_TEST", "later")
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        # The first worker is forked before the server imports cloudpickle, and a plain
        # function sent by value does not need it ...
        assert executor.submit(_has_cloudpickle).result(timeout=60) is False
        # ... but a call that does imports it there.
        assert type(executor.submit(_by_value_instance).result(timeout=60)).__name__ == \
            "_ByValue"
        assert executor.submit(_has_cloudpickle).result(timeout=60) is True
    time.sleep(0.5)  # the server, idle after its first fork, imports it meanwhile
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        # The next worker is forked from a server that has it.
        assert executor.submit(_has_cloudpickle).result(timeout=60) is True
