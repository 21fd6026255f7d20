"""The benchmarks' faster moto (tests/servers/moto_fast.py) answers as moto does.

The same requests go to moto and to the patched server, and their answers are compared:
prefix listings (with delimiters, pagination, overwritten and deleted keys, delete
markers of a versioned bucket), and SQS receive, delete (also of an unknown or already
deleted receipt handle), visibility and the approximate message counts. The server's
per-operation request counts (``--stats``) are checked too.
"""

from __future__ import annotations

import boto3
import pytest

from tests.servers.moto_server import MotoServer

KEYS = [f"jobs/{job}/{kind}/{i:04d}" for job in ("a", "ab", "b") for kind in ("s", "t")
        for i in range(0, 120, 7)] + ["jobs/a", "jobs/a/", "jobsx/1", "other/1", "z"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    work = tmp_path_factory.mktemp("moto-fast")
    started = [MotoServer(str(work / "plain.log")), MotoServer(str(work / "fast.log"), fast=True)]
    yield started
    for server in started:
        server.stop()


def client(server, service):
    env = server.env()
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def listing(s3, bucket, **kwargs):
    """Every page of a ListObjectsV2 and of a ListObjects, without timestamps and ids."""
    pages = []
    for operation, token in (("list_objects_v2", "ContinuationToken"), ("list_objects", "Marker")):
        args = dict(kwargs)
        while True:
            page = getattr(s3, operation)(Bucket=bucket, **args)
            pages.append({"keys": [(o["Key"], o["Size"], o["ETag"]) for o in page.get("Contents", [])],
                          "prefixes": [p["Prefix"] for p in page.get("CommonPrefixes", [])],
                          "truncated": page["IsTruncated"], "count": page.get("KeyCount")})
            if not page["IsTruncated"]:
                break
            nxt = page.get("NextContinuationToken") or page.get("NextMarker") \
                or page["Contents"][-1]["Key"]
            args[token] = nxt
    return pages


def s3_answers(server):
    s3 = client(server, "s3")
    answers = []
    for bucket, versioned in (("plain", False), ("versioned", True)):
        s3.create_bucket(Bucket=bucket)
        if versioned:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        for key in KEYS:
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        for key in KEYS[::5]:
            s3.put_object(Bucket=bucket, Key=key, Body=b"overwritten " + key.encode())
        for key in KEYS[1::4]:
            s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in KEYS[2::9]]})
        for prefix in ("", "jobs/", "jobs/a", "jobs/a/", "jobs/ab/t/", "jobs/b/s/01", "none/"):
            for delimiter in (None, "/"):
                for max_keys in (1000, 7):
                    kwargs = {"Prefix": prefix, "MaxKeys": max_keys}
                    if delimiter:
                        kwargs["Delimiter"] = delimiter
                    answers.append((bucket, kwargs, listing(s3, bucket, **kwargs)))
        answers.append((bucket, "start-after", s3.list_objects_v2(
            Bucket=bucket, Prefix="jobs/a", StartAfter="jobs/a/t/0050")["KeyCount"]))
    return answers


def test_the_fast_server_is_patched(servers):
    assert servers[1].proc.args[1:3] == ["-m", "tests.servers.moto_fast"]
    assert "--plain" not in servers[1].proc.args


def test_s3_listings_are_moto_s(servers):
    plain, fast = (s3_answers(server) for server in servers)
    assert [a[:2] for a in fast] == [a[:2] for a in plain]
    for got, expected in zip(fast, plain):
        assert got == expected, got[:2]


def sqs_answers(server):
    sqs = client(server, "sqs")
    url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
              "ApproximateNumberOfMessagesDelayed"]
    answers = []

    def state(label):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=counts)["Attributes"]
        answers.append((label, attributes))

    for start in range(0, 40, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": f"m{start + i}", "DelaySeconds": 60 if i == 9 else 0}
            for i in range(10)])
    state("sent")
    received = []
    for _ in range(3):
        received += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    answers.append(("received", sorted(m["Body"] for m in received)))
    state("received")
    result = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received[:10])])
    answers.append(("deleted", sorted(e["Id"] for e in result.get("Successful", [])),
                    result.get("Failed", [])))
    again = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "again", "ReceiptHandle": received[0]["ReceiptHandle"]},
        {"Id": "unknown", "ReceiptHandle": "not-a-handle"}])
    answers.append(("again", [e["Id"] for e in again.get("Successful", [])],
                    [(e["Id"], e["Code"]) for e in again.get("Failed", [])]))
    state("deleted")
    sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
        for i, m in enumerate(received[10:15])])
    state("made visible")
    rest = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        rest += got
    answers.append(("rest", sorted(m["Body"] for m in rest)))
    state("drained")
    return answers


def test_sqs_answers_are_moto_s(servers):
    plain, fast = (sqs_answers(server) for server in servers)
    assert fast == plain


def test_request_stats_count_each_operation(tmp_path):
    server = MotoServer(str(tmp_path / "moto.log"), fast=True,
                        stats_path=str(tmp_path / "stats.json"))
    try:
        s3, sqs = client(server, "s3"), client(server, "sqs")
        s3.create_bucket(Bucket="bucket")
        for i in range(3):
            s3.put_object(Bucket="bucket", Key=f"k{i}", Body=b"x")
        s3.list_objects_v2(Bucket="bucket", Prefix="k")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="m")
        sqs.receive_message(QueueUrl=url)
    finally:
        server.stop()
    stats = server.request_stats()
    requests = {op: figures["requests"] for op, figures in stats["operations"].items()}
    assert requests == {"s3:PUT": 4, "s3:List": 1, "sqs:CreateQueue": 1,
                        "sqs:SendMessage": 1, "sqs:ReceiveMessage": 1}
    assert stats["process_cpu"] > sum(f["cpu"] for f in stats["operations"].values()) > 0
