"""The shared backend suite on aws_lambda (moto + the awslambdaric harness)."""

from __future__ import annotations

import pytest

import wrencore
from tests.backend_suite import BackendSuite


@pytest.fixture
def executor(lambda_env):
    # The suite's functions live in a module that imports wrencore, which a Lambda worker
    # does not have (only the runtime is deployed): the client pickles local modules by
    # value, so this works without any help from the test.
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as ex:
        yield ex


class TestLambdaBackend(BackendSuite):
    large_size = 9 * 1024 * 1024  # above the S3 multipart threshold, both ways
