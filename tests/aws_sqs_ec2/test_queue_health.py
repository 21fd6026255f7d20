"""How the fleet backend judges its task queue: transient failures are retried for a
bounded time, failures repeating cannot fix end the calls after 3 in a row."""

from __future__ import annotations

import time

from botocore.exceptions import ClientError, EndpointConnectionError

from wrencore.errors import QueueError
from wrencore_aws_sqs_ec2.backend import _EmptyQueue, _QueueHealth
from wrencore_aws.sqs import queue_error


def _client_error(code, status):
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ReceiveMessage")


def test_errors_name_operation_queue_and_code_and_say_whether_repeating_helps():
    gone = queue_error("ReceiveMessage", "q-1", _client_error(
        "AWS.SimpleQueueService.NonExistentQueue", 400))
    assert str(gone) == "ReceiveMessage on queue q-1 failed: " \
                       "AWS.SimpleQueueService.NonExistentQueue"
    assert gone.transient is False
    assert queue_error("ReceiveMessage", "q", _client_error("ThrottlingException", 400)).transient
    assert queue_error("ReceiveMessage", "q", _client_error("InternalError", 500)).transient
    assert queue_error("ReceiveMessage", "q",
                       EndpointConnectionError(endpoint_url="http://x")).transient


def test_transient_failures_are_retried_for_a_bounded_time_permanent_ones_three_times():
    health = _QueueHealth("q-1", give_up_after=0.3)
    throttled = queue_error("GetQueueAttributes", "q-1", _client_error("Throttling", 400))
    for _ in range(5):
        health.failed(throttled)
    assert health.failure is None  # transient, and not for long
    time.sleep(0.35)
    health.failed(throttled)
    assert isinstance(health.failure, QueueError) and health.failure.transient
    assert "failed 6 times in a row" in str(health.failure)
    health.succeeded()
    assert health.failure is None

    gone = queue_error("GetQueueAttributes", "q-1", _client_error("QueueDoesNotExist", 400))
    health.failed(gone)
    health.failed(gone)
    assert health.failure is None
    health.failed(gone)
    assert str(health.failure).startswith("GetQueueAttributes on queue q-1 failed: "
                                          "QueueDoesNotExist (failed 3 times in a row")
    assert "check the queue q-1" in str(health.failure) and not health.failure.transient


def test_the_queue_counts_as_empty_only_after_a_grace_since_the_last_send_and_for_a_grace():
    empty = {"visible": 0, "in_flight": 0}
    queue = _EmptyQueue(grace=0.2, settle=0)  # (moto's counts are exact)
    queue.looked(empty)
    assert queue.for_long() is None  # not for long yet
    time.sleep(0.25)
    queue.looked(empty)
    assert queue.for_long() is not None and queue.for_long() >= 0.2
    queue.sent()  # a message sent a moment ago may not be counted yet
    queue.looked(empty)
    time.sleep(0.25)
    assert queue.for_long() is None
    queue.looked(empty)  # a grace after the send: counts from here
    time.sleep(0.1)
    queue.looked({"visible": 0, "in_flight": 1})  # a call running: its message in flight
    time.sleep(0.15)
    queue.looked(empty)
    assert queue.for_long() is None
    time.sleep(0.25)
    assert queue.for_long() is not None
    queue.looked({"visible": 2, "in_flight": 0})
    assert queue.for_long() is None
    real = _EmptyQueue(grace=0.1)  # SQS's counts settle a minute after a send
    real.sent()
    real.looked(empty)
    time.sleep(0.15)
    real.looked(empty)
    assert real.for_long() is None
    never = _EmptyQueue(grace=0)
    never.looked(empty)
    assert never.for_long() is None
