"""The shared backend test suite: every backend subclasses :class:`BackendSuite`.

A subclass provides an ``executor`` fixture (a :class:`wrencore.Executor` on its backend)
and a ``backend_spec`` fixture (``(backend_name, config)``, from which the suite builds
executors of its own, also in a child interpreter), and may override ``large_size`` to keep
payloads proportionate to its transport.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import concurrent.futures.process
import importlib
import json
import linecache
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest

import wrencore
from wrencore.futures import RemoteTraceback


def _double(x):
    return 2 * x


def _fail_on_seven(x):
    def inner(y):
        if y == 7:
            raise ValueError(f"bad value {y}")
        return y
    return inner(x)


def _lock_on_two(x):
    return threading.Lock() if x == 2 else x


def _chatty(x):
    print(f"hello from call {x}")
    print(f"warning for {x}", file=sys.stderr)
    return x


def _echo_size(blob):
    return len(blob)


def _make_blob(size):
    return b"\x5a" * size


def _sum(values):
    return sum(values)


def _square(x):
    return x * x


class Box:
    def __init__(self, value):
        self.value = value


def _wrap(x):
    return Box(x)


def _record_init(log_path, token):
    with open(log_path, "a") as log:
        log.write(f"{os.getpid()} {token}\n")
    builtins._wrencore_suite_init = token


def _report_init(x):
    return os.getpid(), getattr(builtins, "_wrencore_suite_init", None), x


def _failing_init(log_path):
    with open(log_path, "a") as log:
        log.write(f"{os.getpid()}\n")
    raise OSError("model file not found")


def _exit_now():
    raise SystemExit("raised while unpickling")


class ExitOnUnpickle:
    def __reduce__(self):
        return _exit_now, ()


def _exit_on_unpickle_for_one(x):
    return ExitOnUnpickle() if x == 1 else x


def _init_log_pids(path):
    if not os.path.exists(path):
        return []
    with open(path) as log:
        return [line.split()[0] for line in log if line.strip()]


EXIT_WAIT_SCRIPT = """
import json, sys, wrencore
backend, config, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
executor = wrencore.Executor(backend=backend, config=config)

def record(future):
    with open(out, "a") as f:
        f.write(f"{future.result()}\\n")

for i in range(4):
    executor.submit(pow, 2, i).add_done_callback(record)
# no shutdown, no with, no result(): the interpreter must wait for the calls at exit
"""


def make_helper_module(tmp_path, monkeypatch):
    """A module beside the 'script', importable on the client only; returns it."""
    name = f"helper_{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "user_code"
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent("""
        import os, sys

        OFFSET = 1000

        def shifted(x):
            return x + OFFSET

        def where():
            return __file__, list(sys.path)
    """))
    monkeypatch.syspath_prepend(str(directory))
    return importlib.import_module(name), str(directory)


CELL_SOURCE = """\
import math

def cell_fail(x):
    root = math.sqrt(x)
    raise KeyError(f"cell saw {root}")
"""


def make_cell_function():
    """A function defined as a notebook cell is: its source only in the client's linecache.

    It travels by value (its module is ``__main__``) and no worker can read its file.
    """
    filename = f"<wrencore-cell-{uuid.uuid4().hex[:8]}>"
    linecache.cache[filename] = (len(CELL_SOURCE), None, CELL_SOURCE.splitlines(True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(CELL_SOURCE, filename, "exec"), namespace)
    return namespace["cell_fail"], filename


def make_failing_module(tmp_path, monkeypatch):
    """A local module whose function fails on line 6; returns the module and its path."""
    name = f"failing_{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "user_code"
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text("import os\n\n\ndef explode(x):\n    half = x // 2\n"
                    "    return {}[half]  # the failing line\n")
    monkeypatch.syspath_prepend(str(directory))
    return importlib.import_module(name), str(path)


class BackendSuite:
    #: Bytes of the "large" argument and result cases.
    large_size = 20 * 1024 * 1024

    def test_map_returns_results_in_input_order(self, executor):
        futures = executor.map_futures(_double, range(50))
        assert [f.result(timeout=60) for f in futures] == [2 * x for x in range(50)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)

    def test_exception_keeps_its_type_and_remote_traceback(self, executor):
        futures = executor.map_futures(_fail_on_seven, range(10))
        assert [f.result(timeout=60) for f in futures if f.call_id != "00007"] == \
            [x for x in range(10) if x != 7]
        with pytest.raises(ValueError, match="bad value 7") as info:
            futures[7].result(timeout=60)
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "in inner" in cause.tb and "bad value 7" in cause.tb
        assert isinstance(futures[7].exception(), ValueError)

    def test_traceback_of_a_by_value_function_shows_its_cell(self, executor):
        cell_fail, filename = make_cell_function()
        futures = executor.map_futures(cell_fail, [1, 4])
        with pytest.raises(KeyError, match="cell saw 2.0") as info:
            futures[1].result(timeout=60)
        tb = info.value.__cause__.tb
        assert f'File "{filename}", line 5, in cell_fail\n' \
               f'    raise KeyError(f"cell saw {{root}}")\n' in tb
        assert "<dynamic-code>" not in tb
        assert info.value.__notes__ == [
            f"wrencore: raised by call 00001 of job {futures[1].job_id}: cell_fail(4)"]

    def test_traceback_of_a_shipped_module_shows_its_file(self, executor, tmp_path, monkeypatch):
        module, path = make_failing_module(tmp_path, monkeypatch)
        future = executor.submit(module.explode, 14)
        with pytest.raises(KeyError) as info:
            future.result(timeout=60)
        tb = info.value.__cause__.tb
        assert f'File "{path}", line 6, in explode\n' \
               f'    return {{}}[half]  # the failing line\n' in tb
        assert any(f"call {future.call_id} of job {future.job_id}: explode(14)" in note
                   for note in info.value.__notes__)

    def test_unpicklable_result_fails_only_its_call(self, executor):
        futures = executor.map_futures(_lock_on_two, range(5))
        with pytest.raises(wrencore.SerializationError, match="00002.*could not be pickled"):
            futures[2].result(timeout=60)
        assert [futures[i].result(timeout=60) for i in (0, 1, 3, 4)] == [0, 1, 3, 4]

    def test_output_and_metadata_reach_the_future(self, executor):
        future = executor.submit(_chatty, 5)
        assert future.result(timeout=60) == 5
        assert "hello from call 5" in future.stdout
        assert "warning for 5" in future.stderr
        meta = future.metadata
        assert meta["host_submit_timestamp"] <= meta["worker_start_timestamp"] \
            <= meta["worker_end_timestamp"] <= meta["host_status_timestamp"]
        assert meta["worker_exec_time"] >= 0 and meta["worker_setup_time"] >= 0

    def test_large_argument_and_result(self, executor):
        blob = _make_blob(self.large_size)
        assert executor.submit(_echo_size, blob).result(timeout=120) == self.large_size
        assert executor.submit(_make_blob, self.large_size).result(timeout=120) == blob

    def test_local_helper_module_travels_with_the_job(self, executor, tmp_path, monkeypatch):
        helper, directory = make_helper_module(tmp_path, monkeypatch)
        f = lambda x: helper.shifted(x)  # noqa: E731
        assert [fut.result(timeout=60) for fut in executor.map_futures(f, [1, 2])] == [1001, 1002]
        # A run-time import finds the module's shipped source, not the client's directory.
        name = helper.__name__
        where = lambda: importlib.import_module(name).where()  # noqa: E731
        worker_file, worker_path = executor.submit(where).result(timeout=60)
        assert directory not in worker_path
        assert not worker_file.startswith(directory)
        assert worker_file.endswith(f"{name}.py")

    def test_local_class_instances_round_trip_with_their_identity(self, executor):
        futures = executor.map_futures(_wrap, [1, 2])
        results = [f.result(timeout=60) for f in futures]
        assert all(type(r) is Box for r in results)
        assert [r.value for r in results] == [1, 2]

    def test_stdlib_wait_and_as_completed_accept_the_futures(self, executor):
        futures = executor.map_futures(_double, range(8))
        done, not_done = concurrent.futures.wait(futures, timeout=60)
        assert len(done) == 8 and not not_done
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == \
            [2 * x for x in range(8)]

    def test_executor_map_is_a_drop_in_for_the_stdlib(self, executor):
        assert list(executor.map(pow, [2, 3, 4], [5, 2, 1])) == [32, 9, 4]

    # -- concurrent.futures compatibility ------------------------------------------------
    def test_initializer_runs_once_per_worker_before_its_calls(self, backend_spec, tmp_path):
        backend, config = backend_spec
        log, token = str(tmp_path / "init.log"), uuid.uuid4().hex
        with wrencore.Executor(backend=backend, config=config, initializer=_record_init,
                               initargs=(log, token)) as executor:
            outcomes = [f.result(timeout=120) for f in executor.map_futures(_report_init, range(12))]
        assert [x for _, _, x in outcomes] == list(range(12))
        assert {seen for _, seen, _ in outcomes} == {token}
        initialized = _init_log_pids(log)
        assert len(initialized) == len(set(initialized)), "initializer ran twice in a process"
        assert {str(pid) for pid, _, _ in outcomes} <= set(initialized)

    def test_failing_initializer_fails_calls_naming_it_and_is_not_retried(self, backend_spec,
                                                                           tmp_path):
        backend, config = backend_spec
        log = str(tmp_path / "init.log")
        with wrencore.Executor(backend=backend, config=config, initializer=_failing_init,
                               initargs=(log,)) as executor:
            futures = executor.map_futures(_double, range(6))
            done, not_done = concurrent.futures.wait(futures, timeout=120)
        assert not not_done
        for future in futures:
            error = future.exception()
            assert isinstance(error, wrencore.InitializerError)
            assert isinstance(error, concurrent.futures.process.BrokenProcessPool)
            assert "_failing_init" in str(error) and "model file not found" in str(error)
        initialized = _init_log_pids(log)
        assert initialized and len(initialized) == len(set(initialized)), \
            "a failed initializer was retried in the same process"

    def test_base_exception_while_decoding_a_result_fails_only_that_call(self, executor):
        futures = executor.map_futures(_exit_on_unpickle_for_one, range(6))
        error = futures[1].exception(timeout=120)
        assert isinstance(error, wrencore.DeserializationError)
        assert isinstance(error.__cause__, SystemExit)
        assert [futures[i].result(timeout=120) for i in (0, 2, 3, 4, 5)] == [0, 2, 3, 4, 5]
        # The thread that decoded it is alive: more calls still complete.
        assert [f.result(timeout=120) for f in executor.map_futures(_double, range(4))] == \
            [0, 2, 4, 6]

    def test_errors_are_the_stdlib_classes_existing_code_catches(self, executor):
        futures = executor.map_futures(_lock_on_two, range(3))
        with pytest.raises(pickle.PicklingError):
            futures[2].result(timeout=120)
        assert issubclass(wrencore.WorkerCrashedError, concurrent.futures.BrokenExecutor)
        assert issubclass(wrencore.WorkerCrashedError,
                          concurrent.futures.process.BrokenProcessPool)
        assert issubclass(wrencore.DeserializationError, pickle.UnpicklingError)
        assert issubclass(wrencore.ExecutorShutdownError, RuntimeError)

    def test_interpreter_exit_waits_for_pending_calls(self, backend_spec, tmp_path):
        backend, config = backend_spec
        out = tmp_path / "results.txt"
        proc = subprocess.run(
            [sys.executable, "-c", EXIT_WAIT_SCRIPT, backend, json.dumps(config), str(out)],
            capture_output=True, text=True, timeout=150, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        written = out.read_text() if out.exists() else "(nothing)"
        assert sorted(int(line) for line in written.split()) == [1, 2, 4, 8], (written, proc.stderr)
