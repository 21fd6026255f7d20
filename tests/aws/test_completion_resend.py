"""The completion channel's ReceiveMessage and DeleteMessageBatch re-signed from botocore's
first ones (wrencore_aws.resend), on the moto server."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from tests.request_counter import RequestCounter
from wrencore.errors import QueueError
from wrencore_aws import completion
from wrencore_aws.completion import QUEUE_PREFIX, SQSCompletionChannel, _json_body
from wrencore_aws.resend import Template


@pytest.fixture
def sqs(aws_env, monkeypatch):
    monkeypatch.setattr(completion, "_swept", {("skip", "skip")})
    client = boto3.client("sqs")
    yield client
    for url in client.list_queues(QueueNamePrefix=QUEUE_PREFIX).get("QueueUrls", []):
        client.delete_queue(QueueUrl=url)


def in_flight(sqs, url: str) -> int:
    return int(sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]["ApproximateNumberOfMessagesNotVisible"])


def receive_all(channel, count: int):
    got = []
    for _ in range(20):
        got += channel.receive(0)
        if len(got) >= count:
            break
    return got


def test_receives_and_deletes_after_the_first_are_re_signed_and_counted(sqs):
    channel = SQSCompletionChannel()
    url = channel.spec()["config"]["url"]
    counter = RequestCounter().attach([channel.client])
    bodies = [json.dumps({"n": i, "text": "é\"\\"}) for i in range(25)]
    for start in range(0, 25, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start:start + 10])])

    got = receive_all(channel, 25)
    assert sorted(b for b, _ in got) == sorted(bodies)
    assert isinstance(channel._receiver.templates[url], Template)  # re-signed after the first
    assert counter.of("ReceiveMessage") >= 3
    assert in_flight(sqs, url) == 25

    channel.acknowledge([h for _, h in got])  # three requests: 10, 10, 5
    assert isinstance(channel._deleter.templates[url], Template)
    assert counter.of("DeleteMessageBatch") == 3
    assert in_flight(sqs, url) == 0
    assert channel.receive(0) == []
    channel.close()


def test_our_json_body_is_botocores():
    client = boto3.session.Session().client(
        "sqs", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")
    for operation, params in [
            ("ReceiveMessage", {"QueueUrl": "http://q/1/wrencore-done-x", "MaxNumberOfMessages": 10,
                                "WaitTimeSeconds": 3}),
            ("DeleteMessageBatch", {"QueueUrl": "http://q/1/x", "Entries": [
                {"Id": str(i), "ReceiptHandle": f"h+/=é{i}\"\\\n"} for i in range(10)]})]:
        model = client.meta.service_model.operation_model(operation)
        request = client._serializer.serialize_to_request(params, model)
        assert request["body"] == _json_body(params)


def test_a_body_other_than_botocores_keeps_the_queue_on_botocore(sqs):
    channel = SQSCompletionChannel()
    url = channel.spec()["config"]["url"]
    calls = []

    def botocore_call():
        calls.append(1)
        return channel.client.receive_message(QueueUrl=url, WaitTimeSeconds=0)

    # What it would send is not what botocore sends: never re-signed.
    channel._receiver.call(url, b'{"QueueUrl": "elsewhere"}', botocore_call)
    assert channel._receiver.templates[url] is None
    channel._receiver.call(url, b"{}", botocore_call)
    assert calls == [1, 1]
    channel.close()


def test_a_failed_request_is_made_again_through_botocore(sqs, monkeypatch):
    channel = SQSCompletionChannel()
    url = channel.spec()["config"]["url"]
    counter = RequestCounter().attach([channel.client])
    assert channel.receive(0) == []  # the first goes through botocore
    sqs.send_message(QueueUrl=url, MessageBody="m")
    receiver = channel._receiver
    assert receiver.templates[url] is not None
    throttled = {"Error": {"Code": "ThrottlingException", "QueryErrorCode": "Throttling"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}
    sent = []

    def throttle(template, headers, body):
        sent.append(body)
        return AWSResponse(url, 400, {}, None), throttled

    monkeypatch.setattr(receiver, "_send", throttle)
    before = counter.of("ReceiveMessage")
    messages = channel.receive(0)
    assert len(sent) == 1  # the re-signed request was refused...
    assert counter.of("ReceiveMessage") == before + 2  # ...and botocore made it again
    assert [body for body, _ in messages] == ["m"]
    channel.close()


def test_a_deleted_queue_still_fails_as_queue_does_not_exist(sqs):
    channel = SQSCompletionChannel()
    url = channel.spec()["config"]["url"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    handles = [h for _, h in receive_all(channel, 1)]
    channel.acknowledge(handles)
    channel.receive(0)
    assert channel._receiver.templates[url] is not None
    assert channel._deleter.templates[url] is not None
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(QueueError) as info:
        channel.receive(0)
    assert not info.value.transient  # what the watcher's give-up logic counts
    assert isinstance(info.value.__cause__, channel.client.exceptions.QueueDoesNotExist)
    with pytest.raises(channel.client.exceptions.QueueDoesNotExist):
        channel.acknowledge(handles)
