"""Completion without listing on the Lambda harness: requests counted with botocore hooks."""

from __future__ import annotations

import time

import boto3

import wrencore
from tests.request_counter import RequestCounter, lambda_clients

from . import workload


def _job_requests(executor, counter, calls):
    before = counter.snapshot()
    futures = executor.map_futures(workload.square, range(calls))
    assert wrencore.get_all_results(futures, timeout=300) == [x * x for x in range(calls)]
    after = counter.snapshot()
    after.subtract(before)
    return after


def _of(counts, operation):
    return sum(n for (_, op), n in counts.items() if op == operation)


def test_finding_finished_calls_does_not_list_the_job_or_read_each_status(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        # Deploying and storing the runtime (its manifest read back, a layer built from its
        # wheels) happen once, in the first job: not what finding finished calls costs.
        assert executor.submit(workload.square, 2).result(timeout=60) == 4
        counter = RequestCounter().attach(lambda_clients(executor))
        small = _job_requests(executor, counter, 50)
        large = _job_requests(executor, counter, 500)
        queue = executor.backend._channel.name
    # 50 calls are invoked one by one; 500 (over relay_min, 200) go in relay events of 100.
    for counts, calls, invokes in ((small, 50, 50), (large, 500, 5)):
        assert _of(counts, "Invoke") == invokes
        completion = sum(n for (service, op), n in counts.items() if op != "Invoke"
                         and op != "PutObject")
        # A few listings when the channel goes quiet, whatever the size; no GET per call.
        assert _of(counts, "ListObjectsV2") <= 4, counts
        assert _of(counts, "GetObject") <= 4, counts
        assert completion <= 0.5 * calls + 10, counts
    assert _of(large, "ListObjectsV2") <= _of(small, "ListObjectsV2") + 3
    assert _of(large, "ReceiveMessage") < 500
    # The completion queue is gone after shutdown.
    urls = boto3.client("sqs").list_queues(QueueNamePrefix=queue).get("QueueUrls", [])
    assert urls == []


def test_calls_complete_by_listing_when_the_completion_queue_is_gone(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        assert executor.submit(workload.square, 3).result(timeout=60) == 9
        channel = executor.backend._channel
        boto3.client("sqs").delete_queue(QueueUrl=channel.spec()["config"]["url"])
        start = time.monotonic()
        futures = executor.map_futures(workload.square, range(20))
        assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(20)]
        assert time.monotonic() - start < 60


def test_without_the_channel_storage_is_listed_as_before(lambda_env):
    config = dict(lambda_env.config, completion_channel=False)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        counter = RequestCounter().attach(lambda_clients(executor))
        counts = _job_requests(executor, counter, 30)
        assert executor.backend._channel is None
    assert _of(counts, "ListObjectsV2") >= 1 and _of(counts, "ReceiveMessage") == 0
