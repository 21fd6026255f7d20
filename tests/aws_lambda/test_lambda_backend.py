"""The aws_lambda backend end to end: boto3 → harness (moto + awslambdaric) → S3 → futures."""

from __future__ import annotations

import wrencore

from .workload import square




def test_map_of_many_calls(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(square, range(210))
        assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(210)]
    stats = lambda_env.stats()
    assert stats["invokes"]["Event"] == 210
    assert stats["errors"] == []
