"""Faults under running jobs on the Lambda harness: every future ends once, with its own
outcome, in bounded time — when a chunk runs into the function's timeout, when a sandbox
dies, when a status is corrupt or another call's, and when the job's bucket disappears."""

from __future__ import annotations

import time

import boto3
import pytest

import wrencore
from wrencore.errors import StatusError, StorageError, WorkerCrashedError
from tests.aws_lambda import workload as lambda_workload

from . import workload


def _config(env, **lambda_settings):
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in env.config.items()}
    config["aws_lambda"].update(lambda_settings)
    return config


def _ends_once(futures):
    """Record every completion of every future (a second one would show up here)."""
    ends = []
    for future in futures:
        future.add_done_callback(lambda f: ends.append(f.call_id))
    return ends


def test_finished_calls_keep_their_results_when_a_later_call_of_the_chunk_times_out(
        lambda_env):
    config = _config(lambda_env, timeout=2, result_grace=1)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(lambda_workload.sleep_ignoring_alarm,
                                       [0.0, 0.0, 30.0, 0.0], chunksize=4)
        ends = _ends_once(futures)
        start = time.monotonic()
        assert [futures[0].result(timeout=30), futures[1].result(timeout=30)] == [0.0, 0.0]
        for future in futures[2:]:
            with pytest.raises(WorkerCrashedError, match="Lambda timeout"):
                future.result(timeout=30)
        assert time.monotonic() - start < 30
    assert sorted(ends) == [f.call_id for f in futures]
    assert [e["errorType"] for e in lambda_env.stats()["errors"]] == ["Sandbox.Timedout"]


def test_finished_calls_keep_their_results_when_the_sandbox_dies(lambda_env):
    lambda_env.configure(crash_call_ids=["00000"], crash_delay=1.0)
    config = _config(lambda_env, timeout=5, result_grace=1)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(lambda_workload.sleep_for, [0.0, 0.1, 10.0],
                                       chunksize=3)
        ends = _ends_once(futures)
        assert [futures[0].result(timeout=30), futures[1].result(timeout=30)] == [0.0, 0.1]
        with pytest.raises(WorkerCrashedError, match="crashed"):
            futures[2].result(timeout=30)
    assert sorted(ends) == [f.call_id for f in futures]
    assert [e["errorType"] for e in lambda_env.stats()["errors"]] == ["Runtime.ExitError"]


def _tasks(bucket, liar, **lie):
    return [dict({"x": i, "call_id": f"{i:05d}", "bucket": bucket},
                 **(dict(liar=True, **lie) if i == liar else {})) for i in range(4)]


def test_another_calls_status_in_place_of_a_calls_own_is_refused(lambda_env):
    # The error's text tells the refusal's verdict from a lost-call verdict, which a deadline
    # of 40 s keeps well out of the way even when sandboxes start slowly under load.
    config = _config(lambda_env, timeout=40, result_grace=5)
    config["status_reads"] = 3
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(
            workload.lie_about_status, _tasks(lambda_env.bucket, 1, status="swap",
                                              copy_of="00002"))
        ends = _ends_once(futures)
        with pytest.raises(StatusError, match="belongs to call '00002'") as info:
            futures[1].result(timeout=60)
        assert [futures[i].result(timeout=30) for i in (0, 2, 3)] == [0, 2, 3]
    assert "00001/status.json" in str(info.value) and lambda_env.bucket in str(info.value)
    assert sorted(ends) == [f.call_id for f in futures]


def test_a_corrupt_status_ends_its_call_with_a_status_error(lambda_env):
    # The error's text tells the refusal's verdict from a lost-call verdict, which a deadline
    # of 40 s keeps well out of the way even when sandboxes start slowly under load.
    config = _config(lambda_env, timeout=40, result_grace=5)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(workload.lie_about_status,
                                       _tasks(lambda_env.bucket, 2, status="corrupt"))
        ends = _ends_once(futures)
        with pytest.raises(StatusError, match="00002/status.json.*is corrupt"):
            futures[2].result(timeout=60)
        assert [futures[i].result(timeout=30) for i in (0, 1, 3)] == [0, 1, 3]
    assert sorted(ends) == [f.call_id for f in futures]


def test_a_corrupt_batch_status_ends_every_call_it_covers_with_a_status_error(lambda_env):
    # A long deadline (a lost call is declared 65 s after its invocation was accepted), so
    # the refused status's verdict (quiet listing, held read, 3 reads a second apart: ~9 s
    # here when idle, 26 s seen under heavy load) comes first; the error's text tells the
    # two verdicts apart, so no bound on the time is needed (it failed on timing alone).
    config = _config(lambda_env, timeout=60, result_grace=5)
    config["status_reads"] = 3
    tasks = [{"x": i, "call_id": f"{i:05d}", "bucket": lambda_env.bucket} for i in range(4)]
    tasks[0].update(forger=True, through="00002")  # the chunk of calls 0-2; 3 is alone
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(workload.forge_batch_status, tasks[:3], chunksize=3)
        futures += executor.map_futures(workload.forge_batch_status, tasks[3:])
        ends = _ends_once(futures)
        s3 = boto3.client("s3")
        deadline = time.monotonic() + 60
        while not any(o["Key"].endswith("/00000/batch-status-to-00002.json") for o in
                      s3.list_objects_v2(Bucket=lambda_env.bucket).get("Contents", ())):
            assert time.monotonic() < deadline, "the forged batch status never appeared"
            time.sleep(0.05)
        for future in futures[:3]:
            # Not the lost-call verdict, which would come only after the 65 s deadline.
            with pytest.raises(StatusError, match=r"00000/batch-status-to-00002\.json is "
                                                  r"corrupt.*refused after 3 reads"):
                future.result(timeout=90)
        assert futures[3].result(timeout=30) == 3
    assert sorted(ends) == sorted(f.call_id for f in futures)


def test_bucket_deleted_mid_job_ends_the_rest_with_a_storage_error(lambda_env):
    # Calls 1 and 2 end only once the bucket is gone (not after a fixed sleep, which a slow
    # sandbox start under load could outlast before the deletion).
    config = _config(lambda_env, timeout=30, result_grace=5)
    executor = wrencore.Executor(backend="aws_lambda", config=config)
    futures = executor.map_futures(
        workload.outlive_bucket, [{"x": i, "bucket": lambda_env.bucket} for i in range(3)])
    ends = _ends_once(futures)
    assert futures[0].result(timeout=30) == 0
    s3 = boto3.client("s3")
    for item in s3.list_objects_v2(Bucket=lambda_env.bucket).get("Contents", ()):
        s3.delete_object(Bucket=lambda_env.bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=lambda_env.bucket)
    start = time.monotonic()
    for future in futures[1:]:
        with pytest.raises(StorageError, match=f"ListObjectsV2 on bucket {lambda_env.bucket}"
                                               r".*NoSuchBucket"):
            future.result(timeout=30)
    assert time.monotonic() - start < 10
    executor.shutdown(wait=True)  # returns: nothing is left that could still end
    assert time.monotonic() - start < 15
    assert sorted(ends) == [f.call_id for f in futures]
