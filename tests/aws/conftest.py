"""Fixtures for the AWS tests: a bucket on the session's moto server."""

from __future__ import annotations

import uuid

import boto3
import pytest


@pytest.fixture
def s3_bucket(aws_env):
    name = f"wrencore-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
