"""Cancelling calls on the Lambda harness: calls not yet invoked (also those waiting for the
``max_in_flight`` budget) are never invoked, a chunk's handler skips its cancelled calls, and
Ctrl-C cancels the rest of the job."""

from __future__ import annotations

import time

import pytest

import wrencore
from tests import cancel_workload as work
from tests.servers import procs
from wrencore_runtime.runner import CANCEL_CHECK_INTERVAL


def _config(env, **lambda_settings):
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in env.config.items()}
    config["aws_lambda"].update(lambda_settings)
    return config


def test_calls_waiting_for_the_in_flight_budget_are_cancelled_and_never_invoked(lambda_env,
                                                                                tmp_path):
    directory = str(tmp_path)
    config = _config(lambda_env, max_in_flight=2)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(
            lambda x: work.started_then_held(x, directory, hold=range(6)), range(6))
        procs.wait_until(lambda: len(work.started(directory)) == 2, 60, "two calls to start")
        running = set(work.started(directory))
        waiting = [f for x, f in enumerate(futures) if x not in running]
        assert executor.cancel(waiting) == 4
        for future in waiting:
            with pytest.raises(wrencore.CallCancelledError, match="before it was invoked"):
                future.result(timeout=10)
        (tmp_path / "release").touch()
        assert sorted(futures[x].result(timeout=60) for x in running) == sorted(running)
    # The executor is shut down: every invocation it would ever make is made.
    assert lambda_env.stats()["invokes"]["Event"] == 2
    assert set(work.started(directory)) == running


def test_a_chunks_handler_skips_its_cancelled_calls(lambda_env, tmp_path):
    directory = str(tmp_path)
    with wrencore.Executor(backend="aws_lambda", config=_config(lambda_env)) as executor:
        futures = executor.map_futures(
            lambda x: work.started_then_held(x, directory), range(3), chunksize=3)
        procs.wait_until(lambda: 0 in work.started(directory), 60, "the chunk's first call")
        # Without running=True the futures end with what the handler reports.
        executor.cancel(futures[1:], running=False)
        # The handler lists the job's markers at most every CANCEL_CHECK_INTERVAL seconds:
        # hold the first call until a listing made before the cancel can no longer serve.
        time.sleep(CANCEL_CHECK_INTERVAL)
        (tmp_path / "release").touch()
        assert futures[0].result(timeout=60) == 0
        for future in futures[1:]:
            with pytest.raises(wrencore.CallCancelledError, match="before it started"):
                future.result(timeout=60)
    assert set(work.started(directory)) == {0}
    assert lambda_env.stats()["invokes"]["Event"] == 1
