"""No secret travels with a Lambda job: not in its events, its stored objects, or the
function's environment (the task key is read from SSM by the function's role)."""

from __future__ import annotations

import base64
import json

import boto3

import wrencore

CANARY = "wrencore-canary-lambda-51d2"


def add_one(x):
    return x + 1


def test_no_secret_in_events_objects_or_function_environment(lambda_env, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", CANARY)
    lambda_env.configure(record_events=True)
    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(add_one, [1, 2, 3],
                                       extra_env={"JOB_ONLY": "job-value"})
        big = executor.submit(len, b"y" * 100_000)  # staged arguments
        assert wrencore.get_all_results(futures + [big], timeout=120) == [2, 3, 4, 100_000]
        function = executor.backend.function()
    events = lambda_env.stats()["events"]
    s3 = boto3.client("s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=lambda_env.bucket) for o in page.get("Contents", [])]
    stored = {k: s3.get_object(Bucket=lambda_env.bucket, Key=k)["Body"].read() for k in keys}
    variables = boto3.client("lambda").get_function_configuration(
        FunctionName=function.name)["Environment"]["Variables"]
    ring = json.loads(boto3.client("ssm").get_parameter(
        Name="/wrencore/task-key", WithDecryption=True)["Parameter"]["Value"])
    secrets = [CANARY] + [k["secret"] for k in ring["keys"]]
    documents = [("event", e.encode()) for e in events] + \
        [(f"s3://{lambda_env.bucket}/{k}", v) for k, v in stored.items()] + \
        [("function environment", json.dumps(variables).encode())]
    assert len(events) == 4 and any(k.endswith("args.pickle") for k in keys)
    for where, data in documents:
        for secret in secrets:
            assert secret.encode() not in data, f"a secret travelled in {where}"
            assert base64.b64encode(secret.encode()) not in data, f"a secret in {where}"
    assert json.loads(variables["WRENCORE_TASK_KEY"])["config"]["name"] == "/wrencore/task-key"
    # extra_env travels in its job's events, and only there.
    assert sum("job-value" in e for e in events) == 3
