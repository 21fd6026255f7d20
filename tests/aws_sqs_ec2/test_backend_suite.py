"""The shared backend suite on aws_sqs_ec2: one simulated instance (2 daemons) on moto,
kept for the whole module."""

from __future__ import annotations

import uuid

import boto3
import pytest

import wrencore
from tests.backend_suite import BackendSuite
from tests.servers.fleet_harness import FleetHarness


@pytest.fixture(scope="module")
def suite_config(moto_server):
    moto_server.reset()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in moto_server.env().items():
            mp.setenv(key, value)
        bucket = f"suite-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        ami = boto3.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        fleet = f"suite{uuid.uuid4().hex[:6]}"
        config = {"aws_sqs_ec2": {"queue_name": f"q-{fleet}", "fleet": fleet, "ami": ami,
                                  "min_instances": 1, "max_instances": 1,
                                  "visibility_timeout": 5, "poll_wait": 1},
                  "s3": {"bucket": bucket, "prefix": "suite"}}
        with FleetHarness(moto_server.env(), fleet, numprocs=2):
            yield config


@pytest.fixture
def executor(suite_config):
    with wrencore.Executor(backend="aws_sqs_ec2", config=suite_config) as ex:
        yield ex


@pytest.fixture
def backend_spec(suite_config):
    return "aws_sqs_ec2", suite_config


class TestStandaloneBackend(BackendSuite):
    large_size = 9 * 1024 * 1024  # above the S3 multipart threshold, both ways
