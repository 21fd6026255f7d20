"""Fixtures for the fault suite: the Lambda and fleet fixtures, and a moto of a test's own."""

from __future__ import annotations

import pytest

from tests.aws_lambda.conftest import lambda_env  # noqa: F401
from tests.aws_sqs_ec2.conftest import ami, bucket, fleet, standalone_config  # noqa: F401


@pytest.fixture
def own_moto(tmp_path, monkeypatch):
    """A moto server for this test alone (it may be restarted), with boto3 pointed at it."""
    from tests.servers.moto_server import MotoServer

    server = MotoServer(str(tmp_path / "moto.log"), fast=True)
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    yield server
    server.stop()
