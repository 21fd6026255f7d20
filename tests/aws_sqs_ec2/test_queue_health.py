"""How the fleet backend judges its task queue: transient failures are retried for a
bounded time, failures repeating cannot fix end the calls after 3 in a row."""

from __future__ import annotations

import time

from botocore.exceptions import ClientError, EndpointConnectionError

from wrencore.errors import QueueError
from wrencore_aws_sqs_ec2.backend import _QueueHealth
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
