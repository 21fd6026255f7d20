"""A worker's frame of one job's calls runs through the runner's QuickCalls: every call
still gets its own output, exception and metadata, and the process state a call changed
is put back before the next call of the same frame."""

from __future__ import annotations

import os
import signal
import sys

import pytest

import wrencore

#: Calls of one job go to one worker in one frame: the first loads the function through
#: JobRunner.run, the rest run through QuickCalls.
FRAME = 8


def _step(kind):
    if kind == "print":
        print("to out")
        print("to err", file=sys.stderr)
    elif kind == "fail":
        raise ValueError("failed in the middle of a frame")
    elif kind == "log":
        import logging

        logging.getLogger("user.code").warning("logged")
    elif kind == "change":
        os.chdir("/")
        os.environ["LEFT_BEHIND"] = "1"
        os.umask(0o077)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    umask = os.umask(0)
    os.umask(umask)
    return (os.getpid(), os.getcwd(), "LEFT_BEHIND" in os.environ, umask,
            signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL)


def test_each_call_of_a_frame_keeps_its_own_output_exception_and_metadata():
    kinds = ["plain", "plain", "print", "plain", "fail", "plain", "log", "plain"]
    assert len(kinds) == FRAME
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        futures = executor.map_futures(_step, kinds, chunksize=FRAME)
        wrencore.wait(futures, timeout=60)
    by_kind = dict(zip(kinds, futures))
    assert by_kind["print"].stdout == "to out\n" and by_kind["print"].stderr == "to err\n"
    assert [f.stdout for f in futures].count("to out\n") == 1  # not the calls after it
    with pytest.raises(ValueError, match="failed in the middle of a frame"):
        by_kind["fail"].result()
    assert [f.exception() is None for f in futures] == [k != "fail" for k in kinds]
    assert [message for _, _, name, message in by_kind["log"].log_records
            if name == "user.code"] == ["logged"]
    assert all(not [r for r in f.log_records or [] if r[2] == "user.code"]
               for k, f in zip(kinds, futures) if k != "log")
    plain = [f for k, f in zip(kinds, futures) if k == "plain"]
    keys = set(by_kind["print"].metadata)
    for future in plain:
        assert set(future.metadata) == keys  # a short report stands for the same status
        meta = future.metadata
        assert meta["worker_start_timestamp"] <= meta["worker_end_timestamp"]
        assert meta["worker_exec_time"] >= 0 and meta["worker_result_time"] >= 0
        assert meta["worker_pid"] == future.result()[0]
        assert meta["worker_result_size"] > 0


def test_state_a_call_changed_is_restored_before_the_next_call_of_its_frame():
    kinds = ["plain", "plain", "plain", "change", "plain", "plain", "plain", "plain"]
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        results = list(executor.map(_step, kinds, chunksize=FRAME))
    baseline = results[0]
    assert results[3][1:] == ("/", True, 0o077, False)  # the change itself, seen in the call
    assert {r[0] for r in results} == {baseline[0]}  # restored in place, no new worker
    assert all(r == baseline for i, r in enumerate(results) if i != 3), results


def _chdir_from_c(directory):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.chdir(directory.encode()) == 0  # bypasses os.chdir: not noted
    return os.getcwd()


def _cwd(_):
    return os.getcwd()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libc through ctypes")
def test_a_change_made_in_c_is_restored_after_its_frame(tmp_path):
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        baseline = executor.submit(_cwd, 0).result(timeout=60)
        # Loaded first (JobRunner.run), then a frame whose calls run through QuickCalls.
        executor.submit(_chdir_from_c, baseline).result(timeout=60)
        assert list(executor.map(_chdir_from_c, [str(tmp_path)] * 3, chunksize=3)) == \
            [str(tmp_path)] * 3
        assert executor.submit(_cwd, 1).result(timeout=60) == baseline
