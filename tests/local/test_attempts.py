"""Retries and backup attempts on the local backend: a killed worker's call runs again, the
user's exceptions only when asked, a straggler's backup wins and its late original is
ignored, and the backup policy stays quiet on small or uniform jobs."""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest

import wrencore
from wrencore.attempts import SpeculationPolicy
from wrencore.errors import WorkerCrashedError
from tests import attempts_workload as work
from tests.procs_util import wait_until_gone


def _ends(futures):
    """Every completion of every future (a second one would show up here)."""
    ends = []
    for future in futures:
        future.add_done_callback(lambda f: ends.append(f.call_id))
    return ends


def test_a_worker_killed_mid_call_is_retried_and_the_job_completes(tmp_path):
    with wrencore.Executor(backend="local", max_workers=2, retries=2) as executor:
        futures = executor.map_futures(
            lambda x: work.killed_on_first_attempt(x, str(tmp_path), victims=(0, 3)), range(6))
        ends = _ends(futures)
        assert wrencore.get_all_results(futures, timeout=60) == [x * 10 for x in range(6)]
    assert sorted(ends) == [f.call_id for f in futures]
    for index in (0, 3):
        metadata = futures[index].metadata
        assert metadata["attempts"] == 2 and metadata["attempt"] == 1
        [failed] = metadata["attempt_errors"]
        assert failed["attempt"] == 0 and failed["error"].startswith("WorkerCrashedError")
    assert futures[1].metadata["attempts"] == 1 and futures[1].metadata["attempt_errors"] == []


def test_without_retries_a_killed_worker_fails_its_call(tmp_path):
    with wrencore.Executor(backend="local", max_workers=2) as executor:
        [future] = executor.map_futures(
            lambda x: work.killed_on_first_attempt(x, str(tmp_path)), [0])
        with pytest.raises(WorkerCrashedError):
            future.result(timeout=60)
    assert "attempts" not in future.metadata


def test_retries_run_out_with_the_last_attempts_error(tmp_path):
    directory = str(tmp_path)

    def always_killed(x):
        marker = os.path.join(directory, f"killed-{x}")
        if os.path.exists(marker):
            os.remove(marker)
        return work.killed_on_first_attempt(x, directory)

    with wrencore.Executor(backend="local", max_workers=2) as executor:
        [future] = executor.map_futures(always_killed, [0], retries=2)
        with pytest.raises(WorkerCrashedError):
            future.result(timeout=60)
    assert future.metadata["attempts"] == 3 and future.metadata["attempt"] == 2
    assert [e["attempt"] for e in future.metadata["attempt_errors"]] == [0, 1, 2]


def test_a_user_exception_is_not_retried_unless_asked(tmp_path):
    with wrencore.Executor(backend="local", max_workers=2, retries=3) as executor:
        futures = executor.map_futures(
            lambda x: work.raises_on_first_attempt(x, str(tmp_path)), range(3))
        for future in futures:
            with pytest.raises(work.FlakyError, match="first attempt"):
                future.result(timeout=60)
            assert future.metadata["attempts"] == 1
        asked = executor.map_futures(
            lambda x: work.raises_on_first_attempt(x, str(tmp_path)), range(10, 13),
            retry_on=work.FlakyError)
        assert wrencore.get_all_results(asked, timeout=60) == [100, 110, 120]
        assert all(f.metadata["attempts"] == 2 for f in asked)
        [error] = asked[0].metadata["attempt_errors"]
        assert error["error"] == "FlakyError: first attempt of 10"


def test_retry_on_a_predicate_and_through_executor_map_and_submit(tmp_path):
    directory = str(tmp_path)
    with wrencore.Executor(backend="local", max_workers=2, retries=1,
                           retry_on=lambda exc: "first attempt" in str(exc)) as executor:
        assert list(executor.map(work.raises_on_first_attempt, [1, 2], [directory] * 2)) \
            == [10, 20]
        assert executor.submit(work.raises_on_first_attempt, 3, directory).result(60) == 30
        with pytest.raises(work.FlakyError, match="always 4"):
            executor.submit(work.always_raises, 4).result(60)
        with pytest.raises(work.FlakyError, match="first attempt of 5"):
            list(executor.map(work.raises_on_first_attempt, [5], [directory], retries=0))
    with wrencore.Executor(backend="local", max_workers=2) as executor:
        with pytest.raises(work.FlakyError):
            list(executor.map(work.raises_on_first_attempt, [6], [directory]))


def test_a_stragglers_backup_wins_and_the_losing_original_is_stopped(tmp_path):
    directory = str(tmp_path)
    policy = SpeculationPolicy(min_calls=20, fraction=0.5, multiple=2.0, min_time=0.3)
    executor = wrencore.Executor(backend="local", max_workers=3, speculation=policy)
    try:
        futures = executor.map_futures(
            lambda x: work.straggles_once(x, directory), range(24))
        ends = _ends(futures)
        results = wrencore.get_all_results(futures, timeout=60)
        assert results == [x * 10 for x in range(24)]
        assert futures[0].metadata["backups"] == 1 and futures[0].metadata["attempt"] == 1
        assert futures[0].metadata["attempts"] == 2
        # A call queued behind the straggler in its worker's batch may get one too.
        assert all(f.metadata["backups"] <= 1 for f in futures)
        # The losing original attempt is stopped: the worker running it is killed.
        wait_until_gone([int((tmp_path / "straggler-pid").read_text())], timeout=10)
        assert executor.submit(abs, -3).result(timeout=30) == 3  # and replaced
    finally:
        (tmp_path / "release").touch()
        executor.shutdown(wait=True)
    assert not (tmp_path / "late-done").exists()
    assert futures[0].result() == 0 and futures[0].metadata["attempt"] == 1
    assert sorted(ends) == [f.call_id for f in futures]


def test_backups_stay_quiet_on_uniform_and_on_small_jobs(tmp_path):
    with wrencore.Executor(backend="local", max_workers=2, speculation=True) as executor:
        uniform = executor.map_futures(work.sleep_for, [0.02] * 40)
        wrencore.get_all_results(uniform, timeout=60)
        assert sum(f.metadata["backups"] for f in uniform) == 0
        small = executor.map_futures(lambda x: work.straggles_once(x, str(tmp_path)), range(8))
        done, _ = concurrent.futures.wait(small[1:], timeout=60)
        assert len(done) == 7
        time.sleep(2.5)  # well past twice the median and the 1 s minimum
        (tmp_path / "release").touch()
        assert small[0].result(timeout=60) == "late"
        assert small[0].metadata["backups"] == 0 and small[0].metadata["attempts"] == 1
