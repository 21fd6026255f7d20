"""Calls through Pub/Sub (emulator) to workers started with `wrencore worker`: storage on
the local filesystem, GCS (emulator) and S3 (moto); crashes, poison and idle exit."""

from __future__ import annotations

import os
import signal
import uuid

import boto3
import pytest

import wrencore
from wrencore.errors import WorkerCrashedError
from tests.gcp.workers import WorkerProcess, wait_for, worker_env
from tests.stored_outcomes import stored_statuses

QUEUE = {"name": "tasks", "ack_deadline": 10}
#: The daemon extends deadlines every 3 s and polls briefly, so tests stay short.
WORKER = {"visibility_timeout": 10, "poll_wait": 1}


def square(x):
    return x * x


def die_once(args):
    """Kills the process running it the first time (a marker file remembers), then works."""
    marker, log, x = args
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x + 1


def always_die(x):
    os.kill(os.getpid(), signal.SIGKILL)


def run_map(fn, xs, *, config, backend="gcp_pubsub", storage="localfs"):
    """Futures of ``fn`` over ``xs`` (their executor stays open until they end)."""
    executor = wrencore.Executor(backend=backend, storage=storage, config=config)
    futures = executor.map_futures(fn, xs)
    executor.shutdown(wait=False)
    return futures


@pytest.fixture(scope="module")
def shared(pubsub_emulator, gcs_emulator, moto_server, tmp_path_factory):
    """One project, one `wrencore worker` (2 processes) for the module's storage cases."""
    project = f"wrencore-{uuid.uuid4().hex[:10]}"
    env = worker_env(GOOGLE_CLOUD_PROJECT=project, **pubsub_emulator.env(),
                     **gcs_emulator.env(), **moto_server.env())
    config = {"gcp_pubsub": QUEUE, "worker": WORKER}
    worker = WorkerProcess(str(tmp_path_factory.mktemp("worker")), env, config=config)
    try:
        worker.wait_running(2)
        yield project, config
    finally:
        worker.stop()


@pytest.fixture
def client_env(shared, pubsub_emulator, gcs_emulator, monkeypatch):
    project, config = shared
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", project)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    return config


def test_200_calls_with_storage_on_the_local_filesystem(client_env):
    futures = run_map(square, range(200), backend="gcp_pubsub", storage="localfs",
                           config={"gcp_pubsub": QUEUE})
    assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(200)]


def test_200_calls_with_storage_on_gcs(client_env, gcs_bucket):
    futures = run_map(square, range(200), backend="gcp_pubsub", storage="gcs",
                           config={"gcp_pubsub": QUEUE, "gcs": {"bucket": gcs_bucket}})
    assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(200)]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = storage.Client(project="x", credentials=AnonymousCredentials()).bucket(gcs_bucket)
    names = [b.name for b in bucket.list_blobs(prefix="wrencore/")]
    outcomes = stored_statuses(names, lambda name: bucket.blob(name).download_as_bytes())
    assert len(outcomes) == 200 and all(s["success"] for s in outcomes.values())


def test_200_calls_with_storage_on_s3(client_env, aws_env):
    s3_bucket = f"wrencore-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=s3_bucket)
    futures = run_map(square, range(200), backend="queue", storage="s3",
                           config={"queue": {"name": "gcp_pubsub"}, "gcp_pubsub": QUEUE,
                                   "s3": {"bucket": s3_bucket}})
    assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(200)]
    s3 = boto3.client("s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=s3_bucket, Prefix="wrencore/") for o in page.get("Contents", [])]
    outcomes = stored_statuses(
        keys, lambda key: s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    assert len(outcomes) == 200 and all(s["success"] for s in outcomes.values())


def test_a_worker_killed_mid_call_has_its_call_redelivered_and_resolved_once(client_env,
                                                                              tmp_path):
    marker, log = str(tmp_path / "killed"), str(tmp_path / "runs")
    (future,) = run_map(die_once, [(marker, log, 41)], backend="gcp_pubsub",
                             storage="localfs", config={"gcp_pubsub": QUEUE})
    resolutions = []
    future.add_done_callback(resolutions.append)
    assert future.result(timeout=90) == 42
    with open(log) as f:
        runs = f.read().split()
    assert len(runs) == 2 and runs[0] != runs[1], "killed once, then run by another process"
    wait_for(lambda: resolutions, 10, "the done callback")
    assert resolutions == [future]


def test_a_poison_message_reaches_the_dead_letter_topic_and_fails_its_future(
        pubsub_emulator, tmp_path, monkeypatch):
    project = f"wrencore-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", project)
    config = {"gcp_pubsub": QUEUE, "worker": dict(WORKER, crash_redelivery=0)}
    worker = WorkerProcess(str(tmp_path / "worker"), worker_env(
        GOOGLE_CLOUD_PROJECT=project, **pubsub_emulator.env()), config=config)
    try:
        worker.wait_running(2)
        good, poison = run_map(always_die, [None], backend="gcp_pubsub",
                                    storage="localfs", config=config) + \
            run_map(square, [3], backend="gcp_pubsub", storage="localfs", config=config)
        with pytest.raises(WorkerCrashedError, match="dead-letter queue"):
            good.result(timeout=120)
        assert poison.result(timeout=60) == 9
        assert "delivered 5 times" in str(good.exception())
    finally:
        worker.stop()


def test_an_idle_worker_exits_cleanly_after_its_idle_timeout(pubsub_emulator, tmp_path,
                                                             monkeypatch):
    project = f"wrencore-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", project)
    config = {"gcp_pubsub": QUEUE, "worker": WORKER}
    worker = WorkerProcess(str(tmp_path / "worker"), worker_env(
        GOOGLE_CLOUD_PROJECT=project, **pubsub_emulator.env()), config=config,
        idle_timeout=3)
    try:
        worker.wait_running(2)
        assert run_map(square, [5], backend="gcp_pubsub", storage="localfs",
                            config=config)[0].result(timeout=60) == 25
        assert worker.wait(60) == 0, worker.output()
        assert "releasing it" in worker.output()
    finally:
        worker.stop()
