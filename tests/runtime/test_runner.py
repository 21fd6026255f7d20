"""The worker-side job runner, storage and isolation of the runtime package."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import cloudpickle
import pytest

from wrencore import serialize
from wrencore_runtime import layout
from wrencore_runtime.protocol import PYTHON, SERIALIZER, decode_json
from wrencore_runtime.runner import JobRunner
from wrencore_runtime.storage import LocalFileStorage, storage_from_spec


def _job(storage, func, job_id="job1", **extra):
    job = {"job_id": job_id, "storage": storage.to_spec(),
           "function_key": layout.function_key(job_id), "python": PYTHON,
           "serializer": SERIALIZER, "timeout": None, "extra_env": {},
           "result_inline_limit": 1024, **extra}
    storage.put(job["function_key"], serialize.dumps_function(func))
    return job


def _call(call_id, *args):
    return {"call_id": call_id, "args": cloudpickle.dumps((args, {})), "args_key": None,
            "host_submit_timestamp": 1.0}


def _env_reader(name):
    return os.environ.get(name)


def test_store_mode_writes_result_then_status(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    job = _job(storage, pow)
    outcome = JobRunner().run(job, _call("00001", 2, 10), store=True)
    assert outcome.result is None
    status = decode_json(storage.get(layout.status_key("job1", "00001")))
    assert status["success"] and status["result_key"] == layout.result_key("job1", "00001")
    assert cloudpickle.loads(storage.get(status["result_key"])) == 1024
    meta = status["metadata"]
    assert meta["worker_start_timestamp"] <= meta["worker_end_timestamp"]
    assert {"worker_setup_time", "worker_exec_time", "host_submit_timestamp"} <= meta.keys()


def test_error_status_carries_type_message_and_traceback(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    job = _job(storage, int)
    status = JobRunner().run(job, _call("00002", "not a number"), store=True).status
    assert not status["success"]
    assert status["exception"]["type"] == "builtins.ValueError"
    assert "not a number" in status["exception"]["message"]
    assert "Traceback" in status["exception"]["traceback"]


def test_extra_env_is_set_only_around_the_call(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    job = _job(storage, _env_reader, extra_env={"WRENCORE_TEST_VAR": "yes"})
    outcome = JobRunner().run(job, _call("00003", "WRENCORE_TEST_VAR"), store=False)
    assert cloudpickle.loads(outcome.result) == "yes"
    assert "WRENCORE_TEST_VAR" not in os.environ


def test_version_mismatch_is_refused_before_the_function_loads(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    job = _job(storage, abs, python="2.7")
    storage.put(job["function_key"], b"not even a pickle")
    status = JobRunner().run(job, _call("00004", -1), store=False).status
    assert status["exception"]["type"] == "wrencore_runtime.errors.RuntimeMismatchError"
    assert f"Python 2.7 on the client but {PYTHON} on the worker" in status["exception"]["message"]


def test_local_storage_readers_never_see_partial_objects(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    payloads = [bytes([i]) * (4 << 20) for i in range(1, 4)]
    storage.put("k", payloads[0])
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            seen.add(storage.get("k"))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(30):
        storage.put("k", payloads[i % 3])
    stop.set()
    reader.join()
    assert seen <= set(payloads) and len(seen) >= 1
    assert storage.list("") == ["k"]


def test_storage_spec_round_trip(tmp_path):
    storage = LocalFileStorage(str(tmp_path / "s"))
    rebuilt = storage_from_spec(storage.to_spec())
    rebuilt.put("a/b", b"x")
    assert storage.get("a/b") == b"x"
    with pytest.raises(KeyError):
        storage.get("a/missing")


def _python(code, env=None):
    """Run ``code`` in a fresh interpreter; return the completed process."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_runtime_imports_nothing_of_the_client():
    code = ("import sys, wrencore_runtime.runner, wrencore_runtime.storage, "
            "wrencore_runtime.protocol, wrencore_local.worker\n"
            "bad = sorted(m for m in sys.modules if m == 'wrencore' or m.startswith('wrencore.') "
            "or m.split('.')[0] in ('pluggy', 'boto3', 'botocore', 'google'))\n"
            "print(bad); assert not bad")
    result = _python(code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_wrencore_loads_no_cloud_sdk():
    code = ("import sys, wrencore\nfrom wrencore.plugins import get_registry\nget_registry()\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('boto3', 'botocore', 'google', 'watchtower'))\nprint(bad); assert not bad")
    result = _python(code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_configures_no_logging_unless_asked():
    quiet = ("import logging, wrencore\nassert not logging.getLogger().handlers\n"
             "handlers = logging.getLogger('wrencore').handlers\n"
             "assert [type(h).__name__ for h in handlers] == ['NullHandler'], handlers")
    result = _python(quiet)
    assert result.returncode == 0, result.stderr
    loud = "import logging, wrencore\nlogging.getLogger('wrencore.x').info('hello log')"
    env = dict(os.environ, WRENCORE_LOGLEVEL="info")
    result = _python(loud, env=env)
    assert "INFO wrencore.x: hello log" in result.stderr


class _EqualToEverything:
    """A signal handler that claims to equal any other: a restore must compare by identity."""

    def __call__(self, signum, frame):
        pass

    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


def _replace_signal_handlers(which):
    import signal

    if which == "usr1":  # the only change, so nothing else makes the restore look closer
        signal.signal(signal.SIGUSR1, _EqualToEverything())
    else:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return "changed"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX signals")
def test_signal_handlers_a_call_replaced_are_restored(tmp_path):
    import signal

    storage = LocalFileStorage(str(tmp_path))
    runner = JobRunner()
    job = _job(storage, _replace_signal_handlers)
    before = [signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)]
    try:
        for call_id, which in (("c1", "usr1"), ("c2", "usr2"), ("c3", "usr1")):
            outcome = runner.run(job, _call(call_id, which), store=False)
            assert outcome.status["success"], outcome.status["exception"]
            after = [signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)]
            assert all(a is b for a, b in zip(after, before)), (after, before)
        assert runner.needs_replacement is None
    finally:
        signal.signal(signal.SIGUSR1, before[0])
        signal.signal(signal.SIGUSR2, before[1])


def _print_both_and_fail():
    print("to out")
    print("to err", file=sys.stderr)
    raise ValueError("failed after printing")


def test_output_is_captured_and_streams_put_back_when_a_call_fails(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    runner = JobRunner()
    stdout, stderr = sys.stdout, sys.stderr
    outcome = runner.run(_job(storage, _print_both_and_fail), _call("c1"), store=False)
    assert sys.stdout is stdout and sys.stderr is stderr
    assert not outcome.status["success"]
    assert outcome.status["exception"]["message"] == "failed after printing"
    assert outcome.status["stdout"] == "to out\n"
    assert outcome.status["stderr"] == "to err\n"


def _quick_step(kind):
    if kind == "fail":
        raise KeyError("missing")
    if kind == "big":
        return b"x" * 4096  # over the job's result_inline_limit: staged in storage
    return kind


def test_quick_calls_give_the_statuses_run_gives(tmp_path):
    from wrencore_runtime.runner import QUICK_KEYS

    storage = LocalFileStorage(str(tmp_path))
    runner = JobRunner()
    job = _job(storage, _quick_step)
    assert runner.quick_calls(job) is None  # the function is not loaded yet
    assert runner.quick_calls(_job(storage, _quick_step, "job2", timeout=5)) is None
    first = runner.run(job, _call("c0", "plain"), store=False)
    quick = runner.quick_calls(job)
    assert quick is not None
    tag, status, result, values = quick.run(_call("c1", "plain"), "tag1")
    assert (tag, status, cloudpickle.loads(result)) == ("tag1", None, "plain")
    metadata = dict(quick.constants, host_submit_timestamp=1.0, **dict(zip(QUICK_KEYS, values)))
    assert metadata.keys() == first.status["metadata"].keys()
    for kind in ("fail", "big"):
        _, status, result, values = quick.run(_call("c-" + kind, kind), kind)
        reference = runner.run(job, _call("c-" + kind, kind), store=False)
        assert values is None and result is reference.result
        assert status.keys() == reference.status.keys()
        assert status["metadata"].keys() == reference.status["metadata"].keys()
        for field in ("success", "result_key", "stdout", "stderr", "attempt", "call_id"):
            assert status[field] == reference.status[field], field
        if kind == "fail":
            assert status["exception"]["type"] == reference.status["exception"]["type"]
            assert status["exception"]["call"] == "_quick_step('fail')"
        else:
            assert cloudpickle.loads(storage.get(status["result_key"])) == b"x" * 4096
    quick.finish()
    assert runner.needs_replacement is None
