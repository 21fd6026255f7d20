"""The shared backend suite on aws_lambda (moto + the awslambdaric harness)."""

from __future__ import annotations

import cloudpickle
import pytest

import wrencore
from tests import backend_suite
from tests.backend_suite import BackendSuite


@pytest.fixture
def executor(lambda_env):
    # The suite's functions live in a module that imports wrencore, which a Lambda worker
    # does not have (only the runtime is deployed): ship them by value, as a script's are.
    cloudpickle.register_pickle_by_value(backend_suite)
    try:
        with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as ex:
            yield ex
    finally:
        cloudpickle.unregister_pickle_by_value(backend_suite)


class TestLambdaBackend(BackendSuite):
    large_size = 9 * 1024 * 1024  # above the S3 multipart threshold, both ways
