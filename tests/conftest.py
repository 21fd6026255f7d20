"""Shared fixtures: isolated configuration per test, real servers per session."""

from __future__ import annotations

import os
import sys

import pytest

import wrencore
from wrencore import plugins


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that runs simulated fleet instances shows their logs (boot, cloud-init
    output, supervisord, daemons), so a broken instance is not just a timeout."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    harnesses = sys.modules.get("tests.servers.fleet_harness")
    for harness in list(harnesses.FleetHarness.live) if harnesses else ():
        report.sections.append((f"fleet harness {harness.fleet}", harness.failure_report()))


@pytest.fixture(scope="session", autouse=True)
def task_key_file(tmp_path_factory):
    """One task key file for the session's queue clients and `wrencore worker`s (never the
    user's own), set before any worker fixture starts."""
    path = str(tmp_path_factory.mktemp("task-key") / "task-key.json")
    os.environ["WRENCORE_TASK_KEY_FILE"] = path
    yield path
    os.environ.pop("WRENCORE_TASK_KEY_FILE", None)


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch, task_key_file):
    """Each test starts with no config file and no WRENCORE_* variables but its own storage."""
    for name in list(os.environ):
        if name.startswith("WRENCORE_") and name != "WRENCORE_DISABLE_PLUGINS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("WRENCORE_LOCALFS__ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("WRENCORE_MODULE_CACHE", str(tmp_path / "module-cache"))
    monkeypatch.setenv("WRENCORE_TASK_KEY_FILE", task_key_file)
    yield
    wrencore.shutdown_default_executors()
    plugins.reset()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    from tests.servers.moto_server import MotoServer

    server = MotoServer(str(tmp_path_factory.mktemp("moto") / "moto.log"), fast=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lambda_harness(moto_server, tmp_path_factory):
    """The Lambda harness (moto + awslambdaric), shared by the Lambda and fault tests."""
    from tests.servers.lambda_harness import LambdaHarness

    harness = LambdaHarness(moto_server.endpoint, str(tmp_path_factory.mktemp("lambda-harness")),
                            concurrency=4)
    yield harness
    harness.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """A clean moto and the environment variables that point boto3 at it."""
    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    return moto_server


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory):
    """The Pub/Sub emulator; skipped (locally only: .ci/run checks it exists) when missing."""
    from tests.servers.gcp_emulators import PubSubEmulator, pubsub_emulator_path

    if not pubsub_emulator_path():
        pytest.skip("the Pub/Sub emulator is not installed (gcloud's pubsub-emulator component "
                    "at /usr/lib/google-cloud-sdk/platform/pubsub-emulator)")
    server = PubSubEmulator(str(tmp_path_factory.mktemp("pubsub") / "emulator.log"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    from tests.servers.gcp_emulators import StorageEmulator

    server = StorageEmulator(str(tmp_path_factory.mktemp("gcs") / "emulator.log"))
    yield server
    server.stop()


@pytest.fixture
def pubsub_env(pubsub_emulator, monkeypatch):
    """The emulator's address and a project of this test's own (the emulator has no reset)."""
    import uuid

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    project = f"wrencore-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", project)
    return project


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch):
    """A fresh bucket on the storage emulator, and the variable that points clients at it."""
    import uuid

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    name = f"wrencore-test-{uuid.uuid4().hex[:8]}"
    storage.Client(project="wrencore-emulator",
                   credentials=AnonymousCredentials()).create_bucket(name)
    return name
