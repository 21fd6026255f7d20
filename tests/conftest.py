"""Shared fixtures: isolated configuration per test, real servers per session."""

from __future__ import annotations

import os

import pytest

import wrencore
from wrencore import plugins


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch):
    """Each test starts with no config file and no WRENCORE_* variables but its own storage."""
    for name in list(os.environ):
        if name.startswith("WRENCORE_") and name != "WRENCORE_DISABLE_PLUGINS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("WRENCORE_LOCALFS__ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("WRENCORE_MODULE_CACHE", str(tmp_path / "module-cache"))
    yield
    wrencore.shutdown_default_executors()
    plugins.reset()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    from tests.servers.moto_server import MotoServer

    server = MotoServer(str(tmp_path_factory.mktemp("moto") / "moto.log"))
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
