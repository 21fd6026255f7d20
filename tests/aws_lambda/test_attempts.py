"""Retries and backup attempts on the Lambda harness: a sandbox killed mid-call is retried,
a superseded attempt's late status is ignored, the user's exceptions are retried only when
asked, and a straggler's backup wins."""

from __future__ import annotations

import pickle
import time

import pytest

import wrencore
from wrencore.attempts import SpeculationPolicy
from wrencore_aws_lambda.backend import LostCallError
from wrencore_runtime import layout
from wrencore_runtime.protocol import encode_json
from tests import attempts_workload as work


def _config(env, **lambda_settings):
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in env.config.items()}
    config["aws_lambda"].update(lambda_settings)
    return config


def _ends(futures):
    ends = []
    for future in futures:
        future.add_done_callback(lambda f: ends.append(f.call_id))
    return ends


def _wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_killed_sandbox_is_retried_and_a_late_status_of_its_attempt_is_ignored(
        lambda_env, tmp_path):
    config = _config(lambda_env, timeout=4, result_grace=1)
    with wrencore.Executor(backend="aws_lambda", config=config, retries=1) as executor:
        futures = executor.map_futures(
            lambda x: work.killed_then_slow(x, str(tmp_path), 2.0 if x == 0 else 0.0),
            range(3))
        ends = _ends(futures)
        _wait_for(tmp_path / "second-started-0")
        # The superseded attempt 0 "comes back" while attempt 1 runs, with another result.
        late = {"job_id": futures[0].job_id, "call_id": futures[0].call_id, "attempt": 0,
                "success": True, "result_key": None, "exception": None, "stdout": "",
                "stderr": "", "result": pickle.dumps("late"), "metadata": {}}
        executor.storage.put(layout.status_key(futures[0].job_id, futures[0].call_id, 0),
                             encode_json(late).encode())
        assert wrencore.get_all_results(futures, timeout=90) == [0, 10, 20]
        won = executor.storage.get(layout.status_key(futures[0].job_id, futures[0].call_id, 1))
        # ... and once more after attempt 1 won.
        executor.storage.put(layout.status_key(futures[0].job_id, futures[0].call_id, 0),
                             encode_json(late).encode())
        time.sleep(1.0)  # several polls of the watcher
    for future in futures:
        assert future.metadata["attempts"] == 2 and future.metadata["attempt"] == 1
        [failed] = future.metadata["attempt_errors"]
        assert failed["attempt"] == 0 and failed["error"].startswith("LostCallError")
    assert futures[0].result() == 0
    assert executor.storage.get(layout.status_key(futures[0].job_id, "00000", 1)) == won
    assert sorted(ends) == [f.call_id for f in futures]
    assert [e["errorType"] for e in lambda_env.stats()["errors"]] == ["Runtime.ExitError"] * 3


def test_without_retries_a_killed_sandbox_fails_its_call(lambda_env, tmp_path):
    config = _config(lambda_env, timeout=3, result_grace=1)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        [future] = executor.map_futures(
            lambda x: work.killed_on_first_attempt(x, str(tmp_path)), [0])
        with pytest.raises(LostCallError):
            future.result(timeout=60)


def test_a_user_exception_is_retried_only_when_asked(lambda_env, tmp_path):
    directory = str(tmp_path)
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config,
                           retries=2) as executor:
        not_asked = executor.map_futures(
            lambda x: work.raises_on_first_attempt(x, directory), range(2))
        for future in not_asked:
            with pytest.raises(work.FlakyError):
                future.result(timeout=60)
            assert future.metadata["attempts"] == 1
        asked = executor.map_futures(
            lambda x: work.raises_on_first_attempt(x, directory), range(10, 12),
            retry_on=(work.FlakyError,))
        assert wrencore.get_all_results(asked, timeout=60) == [100, 110]
        assert [f.metadata["attempts"] for f in asked] == [2, 2]


def test_a_stragglers_backup_wins_on_lambda(lambda_env, tmp_path):
    directory = str(tmp_path)
    policy = SpeculationPolicy(min_calls=8, fraction=0.5, multiple=2.0, min_time=0.5)
    executor = wrencore.Executor(backend="aws_lambda", config=lambda_env.config,
                                 speculation=policy)
    try:
        futures = executor.map_futures(lambda x: work.straggles_once(x, directory), range(8))
        ends = _ends(futures)
        assert wrencore.get_all_results(futures, timeout=60) == [x * 10 for x in range(8)]
        assert futures[0].metadata["backups"] == 1 and futures[0].metadata["attempt"] == 1
        (tmp_path / "release").touch()
        _wait_for(tmp_path / "late-done")
        deadline = time.monotonic() + 30
        late_key = layout.status_key(futures[0].job_id, "00000", 0)
        while not executor.storage.exists(late_key):  # the original's status, written late
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)  # several polls of the watcher
        assert futures[0].result() == 0
    finally:
        (tmp_path / "release").touch()
        executor.shutdown(wait=True)
    assert sorted(ends) == [f.call_id for f in futures]
