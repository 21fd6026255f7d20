"""Job data at rest: S3 server-side encryption and SQS SSE, chosen by config (moto)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from wrencore.config import Config
from wrencore_aws.storage import s3_storage
from wrencore_aws_sqs_ec2.settings import StandaloneSettings
from wrencore_aws.sqs import SQSQueue
from wrencore_runtime.storage import storage_from_spec
from wrencore_aws.s3 import SINGLE_REQUEST_LIMIT


def _encryption(bucket, key):
    head = boto3.client("s3").head_object(Bucket=bucket, Key=key)
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


def test_s3_objects_are_sse_s3_by_default_on_both_sides(s3_bucket):
    store = s3_storage({"bucket": s3_bucket, "prefix": "jobs"})
    store.put("a", b"x")
    assert _encryption(s3_bucket, "jobs/a") == ("AES256", None)
    worker_side = storage_from_spec(store.to_spec())  # as a worker rebuilds it
    worker_side.put("b", b"y" * (SINGLE_REQUEST_LIMIT + 1))  # multipart
    assert _encryption(s3_bucket, "jobs/b")[0] == "AES256"


def test_s3_sse_kms_with_a_key_travels_in_the_spec(s3_bucket):
    key_id = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
    store = s3_storage({"bucket": s3_bucket, "sse": "aws:kms", "sse_kms_key_id": key_id})
    storage_from_spec(store.to_spec()).put("c", b"z")
    encryption, used_key = _encryption(s3_bucket, "wrencore/c")
    assert encryption == "aws:kms" and key_id in used_key


def test_s3_sse_can_be_left_to_the_bucket_and_refuses_unknown_modes(s3_bucket):
    s3_storage({"bucket": s3_bucket, "sse": ""}).put("d", b"w")
    assert _encryption(s3_bucket, "wrencore/d")[0] in (None, "AES256")  # the bucket's choice
    with pytest.raises(ValueError, match="SSE-S3"):
        s3_storage({"bucket": s3_bucket, "sse": "rot13"})


def test_sqs_queues_use_sse_sqs_by_default_and_kms_when_configured(aws_env):
    sqs = boto3.client("sqs")
    settings = StandaloneSettings.from_config(Config({"aws_sqs_ec2": {
        "queue_name": f"q-{uuid.uuid4().hex[:8]}"}}))
    queue = SQSQueue(**settings.queue_config(), create=True)
    for url in (queue.url, queue.dlq_url):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["SqsManagedSseEnabled"] == "true"
    settings = StandaloneSettings.from_config(Config({"aws_sqs_ec2": {
        "queue_name": f"q-{uuid.uuid4().hex[:8]}", "queue_sse": "kms",
        "queue_kms_key_id": "alias/wrencore"}}))
    queue = SQSQueue(**settings.queue_config(), create=True)
    attributes = sqs.get_queue_attributes(QueueUrl=queue.url,
                                          AttributeNames=["All"])["Attributes"]
    assert attributes["KmsMasterKeyId"] == "alias/wrencore"
