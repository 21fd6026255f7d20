"""The shared backend suite on gcp_pubsub: one `wrencore worker` (2 processes) on the
Pub/Sub emulator, kept for the whole module, storage on the local filesystem."""

from __future__ import annotations

import uuid

import pytest

import wrencore
from tests.backend_suite import BackendSuite
from tests.gcp.workers import WorkerProcess, worker_env


@pytest.fixture(scope="module")
def suite_config(pubsub_emulator, tmp_path_factory):
    project = f"wrencore-{uuid.uuid4().hex[:10]}"
    root = str(tmp_path_factory.mktemp("suite-storage"))
    config = {"gcp_pubsub": {"name": "suite", "project": project, "ack_deadline": 10},
              "localfs": {"root": root}, "worker": {"visibility_timeout": 10, "poll_wait": 1}}
    worker = WorkerProcess(str(tmp_path_factory.mktemp("suite-worker")),
                           worker_env(**pubsub_emulator.env()), config=config)
    try:
        worker.wait_running(2)
        yield config
    finally:
        worker.stop()


@pytest.fixture
def executor(suite_config, pubsub_emulator, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    with wrencore.Executor(backend="gcp_pubsub", storage="localfs", config=suite_config) as ex:
        yield ex


@pytest.fixture
def backend_spec(suite_config, pubsub_emulator, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return "gcp_pubsub", dict(suite_config, storage="localfs")


class TestPubSubBackend(BackendSuite):
    large_size = 2 * 1024 * 1024  # staged through storage both ways
