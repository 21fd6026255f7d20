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


@pytest.fixture
def backend_spec(lambda_env):
    return "aws_lambda", lambda_env.config


def test_process_pool_arguments_are_refused_clearly(lambda_env):
    with pytest.raises(ValueError, match="cannot honour max_tasks_per_child, max_workers"):
        wrencore.Executor(backend="aws_lambda", config=lambda_env.config, max_workers=2,
                          max_tasks_per_child=3)


class TestLambdaBackend(BackendSuite):
    large_size = 9 * 1024 * 1024  # above the S3 multipart threshold, both ways
