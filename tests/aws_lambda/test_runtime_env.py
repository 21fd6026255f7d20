"""Job runtimes on the Lambda harness: the job's distributions arrive as a layer.

The sandboxes' Python holds only awslambdaric and boto3 (what AWS's runtime has), so a
function that imports PyYAML or msgpack works only if its runtime's layer delivered them.
"""

from __future__ import annotations

import boto3
import pytest

import wrencore
from wrencore.environment import RuntimeBuildError, job_runtime
from wrencore.errors import RuntimeMismatchError
from wrencore_aws_lambda.layers import RuntimeTooLargeError

from tests import runtime_workload as work


def _config(env, **lambda_settings):
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in env.config.items()}
    config["aws_lambda"].update(lambda_settings)
    return config


def _layers():
    return boto3.client("lambda").list_layers()["Layers"]


def test_import_in_the_function_body_arrives_as_a_layer(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config,
                           runtime="none") as executor:
        with pytest.raises(ModuleNotFoundError):
            executor.submit(work.yaml_and_msgpack, "a: [1, 2]").result(timeout=60)
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(work.yaml_and_msgpack, ["a: [1, 2]", "b: 3"])
        assert wrencore.get_all_results(futures, timeout=60) == [{"a": [1, 2]}, {"b": 3}]
        function = executor.backend.function()
    configuration = boto3.client("lambda").get_function_configuration(FunctionName=function.name)
    assert len(configuration["Layers"]) == 1
    assert function.environment_hash in configuration["Environment"]["Variables"].values()


def test_unchanged_runtime_is_neither_uploaded_nor_published_again(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        assert executor.submit(work.imports_yaml).result(timeout=60)
    s3 = boto3.client("s3")
    keys = lambda listing=None: sorted(o["Key"] for o in s3.list_objects_v2(
        Bucket=lambda_env.bucket, Prefix="jobs/runtimes/").get("Contents", []))
    before, layers = keys(), _layers()
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        assert executor.submit(work.imports_yaml).result(timeout=60)
    assert keys() == before and _layers() == layers


def test_explicit_requirement_not_installed_here_works(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config,
                           requirements=["tabulate==0.9.0"]) as executor:
        assert executor.submit(work.tabulate_version).result(timeout=60) == "0.9.0"


def test_named_runtime_is_reused_without_rebuilding(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        runtime = job_runtime(work.imports_yaml, "auto", None, executor.storage, executor.backend)
    s3 = boto3.client("s3")
    count = lambda: len(s3.list_objects_v2(Bucket=lambda_env.bucket,
                                           Prefix="jobs/runtimes/").get("Contents", []))
    stored = count()
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config,
                           runtime=f"sha256:{runtime.hash}") as executor:
        assert executor.submit(work.imports_yaml).result(timeout=60)
        assert executor.backend.function().environment_hash == runtime.hash
    assert count() == stored


def test_function_with_another_runtime_is_refused_before_any_call(lambda_env):
    pinned = _config(lambda_env, function_name="wrencore-pinned-env")
    with wrencore.Executor(backend="aws_lambda", config=pinned) as executor:
        assert executor.submit(work.toolz_version).result(timeout=60)
    fixed = _config(lambda_env, function_name="wrencore-pinned-env", auto_deploy=False)
    invokes = lambda_env.stats()["invokes"]["Event"]
    with wrencore.Executor(backend="aws_lambda", config=fixed,
                           requirements=["toolz==0.12.1"]) as executor:
        with pytest.raises(RuntimeMismatchError, match=r"toolz \S+ there, 0\.12\.1 here"):
            executor.submit(work.toolz_version)
    assert lambda_env.stats()["invokes"]["Event"] == invokes


def test_distribution_without_a_wheel_is_a_clear_error(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config,
                           requirements=["docopt==0.6.2"]) as executor:
        with pytest.raises(RuntimeBuildError, match="no wheel of docopt==0.6.2"):
            executor.submit(work.plain, 1)
    assert lambda_env.stats()["invokes"]["Event"] == 0


def test_oversize_runtime_lists_the_sizes_and_points_to_ec2(lambda_env):
    small = _config(lambda_env, max_unzipped_size=1_000_000)
    with wrencore.Executor(backend="aws_lambda", config=small) as executor:
        with pytest.raises(RuntimeTooLargeError) as info:
            executor.submit(work.yaml_and_msgpack, "a: 1")
    message = str(info.value)
    assert "pyyaml==" in message and "msgpack==" in message and "MB" in message
    assert "aws_sqs_ec2" in message
    assert _layers() == []
