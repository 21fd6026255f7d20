"""The GCS storage against gcp-storage-emulator, through google-cloud-storage over HTTP."""

from __future__ import annotations

import pytest

from tests.storage_suite import StorageSuite
from wrencore import plugins
from wrencore.errors import ConfigError, StorageError
from wrencore_gcp.storage import GCSStorage


@pytest.fixture
def store(gcs_bucket):
    return GCSStorage(gcs_bucket, "jobs")


class TestGCSStorage(StorageSuite):
    @pytest.fixture
    def other_store(self, gcs_bucket):
        return GCSStorage(gcs_bucket, "other")


def test_keys_live_under_the_prefix(store, gcs_bucket):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    store.put("job1/00000/status.json", b"{}")
    client = storage.Client(project="x", credentials=AnonymousCredentials())
    assert [b.name for b in client.list_blobs(gcs_bucket)] == ["jobs/job1/00000/status.json"]
    assert store.location("a") == f"gs://{gcs_bucket}/jobs/a"


def test_a_missing_bucket_is_a_storage_error_naming_it(gcs_bucket):
    store = GCSStorage(gcs_bucket + "-missing", "jobs")
    with pytest.raises(StorageError, match=gcs_bucket + "-missing"):
        store.put("a", b"b")


def test_registered_factory_validates_config(gcs_bucket):
    factory = plugins.get_registry().load("storage", "gcs")
    with pytest.raises(ConfigError, match="bucket"):
        factory({})
    with pytest.raises(ConfigError, match="credentials"):
        factory({"bucket": "b", "credentials": "x"})
    store = factory({"bucket": gcs_bucket})
    assert store.prefix == "wrencore/" and store.to_spec()["config"] == {
        "bucket": gcs_bucket, "prefix": "wrencore/"}
