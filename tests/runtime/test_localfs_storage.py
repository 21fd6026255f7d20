"""The local-filesystem storage keeps the shared storage contract."""

from __future__ import annotations

import pytest

from tests.storage_suite import StorageSuite
from wrencore_runtime.storage import LocalFileStorage


class TestLocalFileStorage(StorageSuite):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalFileStorage(str(tmp_path / "root" / "jobs"))

    @pytest.fixture
    def other_store(self, tmp_path):
        return LocalFileStorage(str(tmp_path / "root" / "other"))
