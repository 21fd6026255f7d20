"""A moto server with IAM enforcement per test (switched on by the test, after its setup)."""

from __future__ import annotations

import pytest

from tests.trust.iam import EnforcingMoto


@pytest.fixture
def moto_iam(tmp_path, monkeypatch):
    server = EnforcingMoto(str(tmp_path / "moto.log"))
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    yield server
    server.stop()
