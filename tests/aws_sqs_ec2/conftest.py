"""Fixtures for the standalone backend: a bucket and a fleet configuration on moto."""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.servers.fleet_harness import FleetHarness


@pytest.fixture
def bucket(aws_env):
    name = f"wrencore-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def ami(aws_env):
    return boto3.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


@pytest.fixture
def standalone_config(aws_env, bucket, ami):
    """Executor config for a small fleet with short timeouts (override per test)."""
    fleet = f"f{uuid.uuid4().hex[:8]}"

    def make(**overrides):
        section = {
            "queue_name": f"q-{fleet}", "fleet": fleet, "ami": ami,
            "min_instances": 1, "max_instances": 1, "numprocs": 0,
            "visibility_timeout": 2, "max_receives": 3, "idle_timeout": 600,
            "poll_wait": 1, "batch_size": 10, "dead_letter_check_interval": 0.5,
        }
        section.update(overrides)
        return {"aws_sqs_ec2": section, "s3": {"bucket": bucket, "prefix": "jobs"}}

    make.fleet = fleet
    return make


@pytest.fixture
def fleet(aws_env, standalone_config):
    """Start a harness for the fleet of ``standalone_config``; ``fleet(numprocs=2, ...)``."""
    harnesses = []

    def start(numprocs=2, extra_env=None, reap_terminated=True):
        env = dict(aws_env.env(), WRENCORE_DAEMON__LOG_SEND_INTERVAL="1",
                   **(extra_env or {}))
        harness = FleetHarness(env, standalone_config.fleet, numprocs=numprocs,
                               reap_terminated=reap_terminated).__enter__()
        harnesses.append(harness)
        return harness

    yield start
    for harness in harnesses:
        harness.stop()
