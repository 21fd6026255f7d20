"""Fixtures for the Lambda backend: a clean harness (see tests/conftest.py), a bucket, a config."""

from __future__ import annotations

import uuid

import boto3
import pytest


@pytest.fixture
def lambda_env(aws_env, lambda_harness, monkeypatch):
    """A clean moto and harness; boto3's Lambda calls go to the harness; a fresh bucket.

    Returns the harness; ``lambda_env.config`` is the Executor config for this test.
    """
    lambda_harness.reset(keep_warm=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", lambda_harness.endpoint)
    bucket = f"wrencore-lambda-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    lambda_harness.bucket = bucket
    lambda_harness.config = {
        "storage": "s3",
        "s3": {"bucket": bucket, "prefix": "jobs"},
        "aws_lambda": {"timeout": 30, "result_grace": 5, "invoke_threads": 16},
    }
    yield lambda_harness
    lambda_harness.reset(keep_warm=True)
