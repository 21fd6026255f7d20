"""The shared backend test suite: every backend subclasses :class:`BackendSuite`.

A subclass provides an ``executor`` fixture (a :class:`wrencore.Executor` on its backend)
and may override ``large_size`` to keep payloads proportionate to its transport.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import linecache
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
