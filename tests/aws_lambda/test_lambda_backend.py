"""The aws_lambda backend end to end: boto3 → harness (moto + awslambdaric) → S3 → futures.

Every test deploys the real deployment package to moto through the harness, whose sandboxes
run it with awslambdaric in a virtualenv holding only awslambdaric and boto3.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
import time

import boto3
import pytest

import wrencore
from wrencore.errors import CallTimeoutError, RuntimeMismatchError, WorkerCrashedError
from wrencore.futures import RemoteTraceback
from wrencore_aws_lambda.backend import ASYNC_PAYLOAD_LIMIT
from wrencore_aws_lambda.deploy import deploy_function

from . import workload


def _config(env, **lambda_settings):
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in env.config.items()}
    config["aws_lambda"].update(lambda_settings)
    return config


def test_map_of_many_calls_goes_out_in_relay_events(lambda_env, monkeypatch):
    from wrencore_aws_lambda.backend import LambdaBackend

    sent = []
    invoke_event = LambdaBackend._invoke_event
    monkeypatch.setattr(LambdaBackend, "_invoke_event",
                        lambda self, name, payload: (sent.append(payload),
                                                     invoke_event(self, name, payload))[1])
    # At least relay_min (default 200) calls at chunksize 1: relay events of relay_size
    # (default 100) calls, which the function invokes itself.
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(workload.square, range(210))
        assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(210)]
    assert futures[7].metadata["worker_id"].startswith("lambda-")
    assert futures[7].metadata["host_invoke_timestamp"] >= futures[7].metadata["host_submit_timestamp"]
    assert len(sent) == 3  # this computer sent 3 Invokes for 210 calls
    assert all(b'"signed":"relay"' in payload for payload in sent)
    stats = lambda_env.stats()
    assert stats["invokes"]["Event"] == 3 + 210  # the relays, then each call on its own
    assert stats["errors"] == []


def test_a_map_under_relay_min_is_invoked_call_by_call(lambda_env):
    config = _config(lambda_env, relay_min=0)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(workload.square, range(210))
        assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(210)]
    assert lambda_env.stats()["invokes"]["Event"] == 210


def test_chunks_carry_several_calls_per_invocation(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(workload.square, range(50), chunksize=10)
        assert wrencore.get_all_results(futures, timeout=60) == [x * x for x in range(50)]
    assert lambda_env.stats()["invokes"]["Event"] == 5
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=lambda_env.bucket, Prefix="jobs/")["Contents"]]
    # Quick calls finishing while a status write is in flight share the next batch status:
    # every chunk starts one, and there are far fewer status objects than calls.
    from wrencore_runtime import layout

    statuses = sorted(k.split("/", 2)[2] for k in keys if k.endswith(".json")
                      and "/cancel/" not in k and not k.endswith(("job.json", "timeline.json"))
                      and not k.startswith("jobs/runtimes/"))
    batches = [b for b in statuses if layout.is_batch_status_key("j/" + b)]
    assert batches == statuses, statuses
    assert {f"{i:05d}" for i in range(0, 50, 10)} <= {b.split("/")[0] for b in batches}
    assert len(batches) <= 25, batches
    # Each key names the calls it covers (batch-status-to-{last}.json): each call exactly once.
    covering = [[b for b in batches if layout.batch_status_covers("j/" + b, f"{i:05d}")]
                for i in range(50)]
    assert all(len(c) == 1 for c in covering), covering


def test_exception_type_and_traceback_reach_the_caller(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(workload.fail_on, range(6))
        with pytest.raises(workload.CustomError, match="bad input 3") as info:
            futures[3].result(timeout=60)
        assert [f.result(timeout=60) for i, f in enumerate(futures) if i != 3] == [0, 1, 2, 4, 5]
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "fail_on" in cause.tb and "raise CustomError" in cause.tb


def test_one_mebibyte_arguments_and_results(lambda_env):
    blobs = [os.urandom(1 << 20) for _ in range(3)]
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(workload.echo_size, blobs)
        results = wrencore.get_all_results(futures, timeout=60)
    assert results == [bytes(reversed(b)) for b in blobs]


def test_messages_over_the_async_limit_travel_through_s3(lambda_env):
    blobs = [os.urandom(60 * 1024) for _ in range(8)]  # each inline; together over 256 KB
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(workload.echo_size, blobs, chunksize=8)
        results = wrencore.get_all_results(futures, timeout=60)
    assert results == [bytes(reversed(b)) for b in blobs]
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=lambda_env.bucket, Prefix="jobs/")["Contents"]
    payloads = [o for o in listed if "/payloads/" in o["Key"]]
    assert len(payloads) == 1 and payloads[0]["Size"] > ASYNC_PAYLOAD_LIMIT
    body = s3.get_object(Bucket=lambda_env.bucket, Key=payloads[0]["Key"])["Body"].read()
    assert b"testing" not in body and b"AWS_SECRET" not in body  # no credentials travel
    assert lambda_env.stats()["invokes"]["Event"] == 1


def test_function_using_a_local_helper_module(lambda_env, tmp_path, monkeypatch):
    module_dir = tmp_path / "user_code"
    module_dir.mkdir()
    (module_dir / "wren_helper_mod.py").write_text(
        "def triple_plus(x):\n    return 3 * x + OFFSET\n\nOFFSET = 1\n")
    monkeypatch.syspath_prepend(str(module_dir))
    import wren_helper_mod

    try:
        with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
            futures = executor.map_futures(wren_helper_mod.triple_plus, range(5))
            assert wrencore.get_all_results(futures, timeout=60) == [1, 4, 7, 10, 13]
    finally:
        sys.modules.pop("wren_helper_mod", None)


def test_throttled_invocations_are_retried_and_nothing_is_lost(lambda_env):
    lambda_env.configure(throttle_rate=0.5, seed=7)
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(workload.square, range(50))
        assert wrencore.get_all_results(futures, timeout=120) == [x * x for x in range(50)]
    stats = lambda_env.stats()
    assert stats["throttled"] >= 20
    assert stats["invokes"]["Event"] == 50


def test_injected_crash_fails_only_its_own_call(lambda_env):
    lambda_env.configure(crash_call_ids=["00002"], crash_delay=0.3)
    config = _config(lambda_env, timeout=3, result_grace=1)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(workload.sleep_for, [0.0, 0.0, 2.0, 0.0, 0.0])
        start = time.monotonic()
        with pytest.raises(WorkerCrashedError, match="crashed") as info:
            futures[2].result(timeout=30)
        assert time.monotonic() - start < 15
        assert [futures[i].result(timeout=30) for i in (0, 1, 3, 4)] == [0.0] * 4
    assert "call 00002" in str(info.value)
    errors = lambda_env.stats()["errors"]
    assert [e["errorType"] for e in errors] == ["Runtime.ExitError"]
    assert errors[0]["call_ids"] == ["00002"]


def test_call_outliving_the_function_timeout_fails_with_a_timeout_error(lambda_env):
    # 8 s: the quick calls end well inside it even when sandboxes start slowly under load.
    config = _config(lambda_env, timeout=8, result_grace=1)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(workload.sleep_for, [0.0, 40.0, 0.0])
        with pytest.raises(CallTimeoutError, match="Lambda function's timeout of 8 s"):
            futures[1].result(timeout=30)
        assert futures[0].result(timeout=30) == 0.0 and futures[2].result(timeout=30) == 0.0


def test_call_killed_by_the_lambda_timeout_fails_instead_of_hanging(lambda_env):
    config = _config(lambda_env, timeout=4, result_grace=1)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(workload.sleep_ignoring_alarm, [0.0, 20.0, 0.0])
        with pytest.raises(WorkerCrashedError, match="Lambda timeout"):
            futures[1].result(timeout=30)
        assert futures[0].result(timeout=30) == 0.0 and futures[2].result(timeout=30) == 0.0
    assert [e["errorType"] for e in lambda_env.stats()["errors"]] == ["Sandbox.Timedout"]


def test_result_timeout_is_honoured(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        future = executor.submit(workload.sleep_for, 3.0)
        start = time.monotonic()
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(timeout=0.5)
        assert time.monotonic() - start < 2
        assert future.result(timeout=60) == 3.0


def _changed_runtime(tmp_path, marker):
    import wrencore_runtime

    copy = tmp_path / f"runtime-{marker}"
    shutil.copytree(os.path.dirname(wrencore_runtime.__file__), copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "__init__.py", "a") as f:
        f.write(f"\nTEST_MARKER = {marker!r}\n")
    return str(copy)


def test_redeploy_after_a_runtime_change_uses_the_new_function(lambda_env, tmp_path):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        assert executor.map_futures(workload.runtime_marker, [0])[0].result(timeout=60) is None
        old_name = executor.backend.function().name
    config = _config(lambda_env, runtime_path=_changed_runtime(tmp_path, "v2"))
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        assert executor.map_futures(workload.runtime_marker, [0])[0].result(timeout=60) == "v2"
        new_name = executor.backend.function().name
    assert new_name != old_name
    assert lambda_env.stats()["functions_invoked"] == {old_name: 1, new_name: 1}


def test_deploy_is_idempotent_and_least_privilege(lambda_env):
    first = deploy_function(lambda_env.config)
    lam = boto3.client("lambda")
    before = lam.get_function_configuration(FunctionName=first.name)
    second = deploy_function(lambda_env.config)
    after = lam.get_function_configuration(FunctionName=first.name)
    assert second == first
    assert after["LastModified"] == before["LastModified"]
    assert after["CodeSha256"] == before["CodeSha256"]
    assert (before["Environment"]["Variables"]["WRENCORE_RUNTIME_HASH"] == first.runtime_hash)
    role = before["Role"].rsplit("/", 1)[-1]
    policy = boto3.client("iam").get_role_policy(RoleName=role, PolicyName="wrencore-runtime")
    statements = policy["PolicyDocument"]["Statement"]
    resources = [s["Resource"] for s in statements]
    assert f"arn:aws:s3:::{lambda_env.bucket}/jobs/*" in resources
    assert all(r != "*" and "s3:*" not in s["Action"] for s, r in zip(statements, resources))
    assert any(r.endswith(f"log-group:/aws/lambda/{first.name}:*") for r in resources)


def test_version_mismatch_is_refused_before_any_call_runs(lambda_env, tmp_path):
    pinned = _config(lambda_env, function_name="wrencore-pinned")
    deploy_function(pinned)
    changed = _config(lambda_env, function_name="wrencore-pinned", auto_deploy=False,
                      runtime_path=_changed_runtime(tmp_path, "v3"))
    with wrencore.Executor(backend="aws_lambda", config=changed) as executor:
        with pytest.raises(RuntimeMismatchError, match="wrencore lambda deploy"):
            executor.map_futures(workload.square, range(3))
    # A client with the matching runtime but a different serializer is refused too.
    lam = boto3.client("lambda")
    variables = lam.get_function_configuration(
        FunctionName="wrencore-pinned")["Environment"]["Variables"]
    lam.update_function_configuration(FunctionName="wrencore-pinned", Environment={
        "Variables": dict(variables, WRENCORE_SERIALIZER="cloudpickle 0.0.1")})
    mismatched = _config(lambda_env, function_name="wrencore-pinned", auto_deploy=False)
    with wrencore.Executor(backend="aws_lambda", config=mismatched) as executor:
        with pytest.raises(RuntimeMismatchError, match="cloudpickle 0.0.1 there"):
            executor.map_futures(workload.square, range(3))
    assert lambda_env.stats()["invokes"]["Event"] == 0


def test_lambda_requires_s3_storage(lambda_env):
    with pytest.raises(wrencore.ConfigError, match="s3"):
        wrencore.Executor(backend="aws_lambda", storage="localfs", config={})


def _most_at_once(futures):
    spans = [(f.metadata["worker_start_timestamp"], f.metadata["worker_end_timestamp"])
             for f in futures]
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


def test_calls_in_flight_are_capped(lambda_env):
    for cap, check in ((100, lambda most: most >= 3), (2, lambda most: most <= 2)):
        config = _config(lambda_env, max_in_flight=cap)
        with wrencore.Executor(backend="aws_lambda", config=config) as executor:
            futures = executor.map_futures(workload.sleep_for, [0.4] * 8)
            assert wrencore.get_all_results(futures, timeout=60) == [0.4] * 8
        assert check(_most_at_once(futures)), (cap, _most_at_once(futures))


def test_calls_left_without_time_in_a_chunk_fail_clearly(lambda_env):
    config = _config(lambda_env, timeout=3, result_grace=1)
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        futures = executor.map_futures(workload.sleep_for, [20.0, 0.0, 0.0], chunksize=3)
        with pytest.raises(CallTimeoutError, match="Lambda function's timeout"):
            futures[0].result(timeout=30)
        for future in futures[1:]:
            with pytest.raises(CallTimeoutError, match="did not start.*smaller chunksize"):
                future.result(timeout=30)


def test_changed_settings_are_applied_on_first_use(lambda_env):
    first = deploy_function(lambda_env.config)
    config = _config(lambda_env, timeout=45, memory=512)
    # runtime="none": the function deploy_function made, without a job runtime's layer.
    with wrencore.Executor(backend="aws_lambda", config=config, runtime="none") as executor:
        assert executor.submit(workload.square, 4).result(timeout=60) == 16
        assert executor.backend.function().name == first.name
    configuration = boto3.client("lambda").get_function_configuration(FunctionName=first.name)
    assert (configuration["Timeout"], configuration["MemorySize"]) == (45, 512)


def test_output_and_log_records_reach_future_logs(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(workload.print_and_log, [4, 5])
        assert wrencore.get_all_results(futures, timeout=60) == [4, 5]
    logs = futures[1].logs()
    assert "printed 5\n" in logs and "complained 5\n" in logs
    assert "WARNING workload: logged 5" in logs
    assert [r[1:] for r in futures[1].log_records] == [["WARNING", "workload", "logged 5"]]
