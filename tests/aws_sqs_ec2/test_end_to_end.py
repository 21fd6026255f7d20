"""The standalone backend end to end: moto (SQS, EC2, S3, IAM, CloudWatch Logs), simulated
instances running real supervisord and the real daemon."""

from __future__ import annotations

import os
import time

import boto3
import pytest

import wrencore
from wrencore.errors import WorkerCrashedError
from tests.servers import procs


def square(x):
    return x * x


def test_map_500_calls_over_two_instances_of_two_processes(standalone_config, fleet):
    config = standalone_config(min_instances=2, max_instances=2)
    harness = fleet(numprocs=2)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        futures = executor.map_futures(square, range(500))
        instances = harness.wait_for_instances(2)
        results = wrencore.get_all_results(futures, timeout=120)
    assert results == [x * x for x in range(500)]
    workers = {f.metadata["worker_id"] for f in futures}
    instance_ids = {i.id for i in instances}
    assert {w.rsplit("-wrencore-daemon-", 1)[0] for w in workers} == instance_ids
    assert len(workers) == 4, workers
