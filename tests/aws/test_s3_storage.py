"""The S3 storage against moto in server mode, through boto3 over HTTP."""

from __future__ import annotations

import json
import os

import boto3
import pytest

from wrencore import plugins
from wrencore.errors import ConfigError, StorageKeyError
from wrencore_runtime import storage as storage_module
from wrencore_runtime.storage import storage_from_spec
from tests.storage_suite import StorageSuite
from wrencore_aws.s3 import SINGLE_REQUEST_LIMIT, S3Storage


@pytest.fixture
def store(s3_bucket):
    return S3Storage(s3_bucket, "jobs")


def test_put_get_roundtrip_under_prefix(store, s3_bucket):
    store.put("job1/00000/status.json", b'{"ok": true}')
    assert store.get("job1/00000/status.json") == b'{"ok": true}'
    raw = boto3.client("s3").get_object(Bucket=s3_bucket, Key="jobs/job1/00000/status.json")
    assert raw["Body"].read() == b'{"ok": true}'


def test_missing_key_is_storage_key_error(store):
    with pytest.raises(StorageKeyError):
        store.get("nope/00000/status.json")
    assert store.exists("nope/00000/status.json") is False
    store.put("nope/00000/status.json", b"x")
    assert store.exists("nope/00000/status.json") is True


def test_empty_object(store):
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_large_object_is_multipart_and_ranged(store, s3_bucket):
    data = os.urandom(SINGLE_REQUEST_LIMIT + 1024 * 1024 + 7)
    store.put("big/result.pickle", data)
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key="jobs/big/result.pickle")
    assert "-" in head["ETag"], "a multipart upload's ETag ends in -<parts>"
    assert store.get("big/result.pickle") == data


def test_list_and_delete_prefix_stay_inside_the_prefix(store, s3_bucket):
    other = S3Storage(s3_bucket, "other")
    for i in range(3):
        store.put(f"j/{i:05d}/status.json", b"{}")
    store.put("k/00000/status.json", b"{}")
    other.put("j/00000/status.json", b"{}")
    assert store.list("j/") == [f"j/{i:05d}/status.json" for i in range(3)]
    assert store.list("nothing/") == []
    assert store.delete_prefix("j/") == 3
    assert store.list("j/") == []
    assert store.list("k/") == ["k/00000/status.json"]
    assert other.list("j/") == ["j/00000/status.json"]


def test_listing_pages_beyond_one_thousand_keys(store):
    keys = [f"many/{i:05d}/status.json" for i in range(1005)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"{}"), keys))
    assert store.list("many/") == keys
    assert store.delete_prefix("many/") == 1005


def test_spec_has_no_credentials_and_rebuilds(store, s3_bucket):
    spec = store.to_spec()
    text = json.dumps(spec)
    assert "testing" not in text and "secret" not in text.lower()
    assert spec["config"] == {"bucket": s3_bucket, "prefix": "jobs/", "sse": "AES256"}
    storage_module._spec_cache.clear()
    rebuilt = storage_from_spec(spec)
    store.put("spec/x", b"1")
    assert isinstance(rebuilt, S3Storage) and rebuilt.get("spec/x") == b"1"


def test_endpoint_override_from_config(aws_env, monkeypatch):
    endpoint = aws_env.endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="endpoint-test")
    factory = plugins.get_registry().load("storage", "s3")
    store = factory({"bucket": "endpoint-test", "endpoint_url": endpoint})
    store.put("a", b"b")
    assert store.get("a") == b"b" and store.to_spec()["config"]["endpoint_url"] == endpoint


def test_registered_factory_validates_config():
    factory = plugins.get_registry().load("storage", "s3")
    with pytest.raises(ConfigError, match="bucket"):
        factory({})
    with pytest.raises(ConfigError, match="credentials"):
        factory({"bucket": "b", "aws_secret_access_key": "x"})
    assert factory({"bucket": "b"}).prefix == "wrencore/"


class TestS3StorageContract(StorageSuite):
    @pytest.fixture
    def other_store(self, s3_bucket):
        return S3Storage(s3_bucket, "other")
