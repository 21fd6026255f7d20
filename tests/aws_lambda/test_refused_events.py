"""Events the function refuses reach its failure queue, and their calls fail at once.

The harness does what Lambda's asynchronous queue does with a failed event: no retry (the
deployed event invoke config says 0), then the record of the event goes to the on-failure
destination, an SQS queue in moto. The client peeks at it, checks the event's tag with its
own key, and fails the call it names with MessageRefusedError.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest

import wrencore
from wrencore.backends import index_dead_letters
from wrencore.errors import MessageRefusedError
from wrencore_aws_lambda.backend import failed_event
from wrencore_runtime.auth import KIND_TASK, KeyRing
from wrencore_runtime.protocol import encode_json, make_message

from . import workload


def _config(env):
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in env.config.items()}
    config["aws_lambda"].update(dead_letter_check_interval=0.3)
    return config


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.1)


def test_an_altered_event_fails_its_call_with_message_refused(lambda_env):
    with wrencore.Executor(backend="aws_lambda", config=_config(lambda_env)) as executor:
        assert executor.submit(workload.square, 2).result(timeout=60) == 4  # deployed
        lambda_env.configure(tamper_call_ids=["00003"])
        start = time.monotonic()
        futures = executor.map_futures(workload.square, range(6))
        with pytest.raises(MessageRefusedError, match="refused its task message") as info:
            futures[3].result(timeout=30)
        waited = time.monotonic() - start
        assert [f.result(timeout=60) for i, f in enumerate(futures) if i != 3] == \
            [0, 1, 4, 16, 25]
        function = executor.backend.function()
    # Its deadline (function timeout 30 s + grace 5 s) was far off.
    assert waited < 10, waited
    assert f"{function.name}-dlq" in str(info.value)
    stats = lambda_env.stats()
    assert [r["call_ids"] for r in stats["failure_records"]] == [["00003"]]
    assert [e["errorType"] for e in stats["errors"]] == ["MessageRefusedError"]
    assert stats["event_retries"] == 0
    invoke_config = boto3.client("lambda").get_function_event_invoke_config(
        FunctionName=function.name)
    assert invoke_config["MaximumRetryAttempts"] == 0
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"].endswith(
        f":{function.name}-dlq")
    role = boto3.client("iam").get_role_policy(RoleName=function.name[:64],
                                               PolicyName="wrencore-runtime")
    statements = {s["Sid"]: s for s in role["PolicyDocument"]["Statement"]}
    assert statements["FailureQueue"]["Action"] == "sqs:SendMessage"
    assert statements["FailureQueue"]["Resource"].endswith(f":{function.name}-dlq")


def test_a_forged_event_naming_no_call_of_ours_touches_none(lambda_env):
    forger = KeyRing.generate()  # not the deployment's key
    job = {"job_id": "forged-job", "function_key": "forged-job/function.pickle",
           "storage": {"class": "os:system", "config": {}}}
    forged = forger.seal(KIND_TASK, encode_json(make_message(job, [
        {"call_id": "00000", "args": b"\x80\x04K\x01."}])))
    with wrencore.Executor(backend="aws_lambda", config=_config(lambda_env)) as executor:
        assert executor.submit(workload.square, 2).result(timeout=60) == 4
        function = executor.backend.function()
        boto3.client("lambda").invoke(FunctionName=function.name, InvocationType="Event",
                                      Payload=json.dumps(forged).encode())
        futures = executor.map_futures(workload.square, range(8))
        _wait_for(lambda: lambda_env.stats()["failure_records"], 30, "failure record")
        time.sleep(1)  # a few peeks at the failure queue while the calls run
        assert wrencore.get_all_results(futures, timeout=60) == [x * x for x in range(8)]
        signer = executor.backend.signer
    stats = lambda_env.stats()
    assert [r["call_ids"] for r in stats["failure_records"]] == [["00000"]]
    assert [e["errorType"] for e in stats["errors"]] == ["MessageRefusedError"]
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=f"{function.name}-dlq")["QueueUrl"]
    letters = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["requestPayload"] for m in letters] == [forged]
    # The client reads it as refused, naming a job that is not its own: it fails nothing.
    verdicts = index_dead_letters([(failed_event(letters[0]["Body"]), "")], signer)
    assert list(verdicts) == ["forged-job"]
    assert "does not hold" in verdicts["forged-job"][("00000", 0)]


def test_an_altered_reference_to_a_staged_event_fails_the_calls_it_staged(lambda_env):
    import os

    blobs = [os.urandom(60 * 1024) for _ in range(8)]  # together over the async limit
    with wrencore.Executor(backend="aws_lambda", config=_config(lambda_env)) as executor:
        assert executor.submit(workload.square, 2).result(timeout=60) == 4  # deployed
        lambda_env.configure(tamper_call_ids=["00000"])
        start = time.monotonic()
        staged = executor.map_futures(workload.echo_size, blobs, chunksize=8)
        for future in staged:
            with pytest.raises(MessageRefusedError, match="refused its task message"):
                future.result(timeout=30)
        waited = time.monotonic() - start
        lambda_env.configure(tamper_call_ids=[])
        assert executor.submit(workload.square, 3).result(timeout=60) == 9  # others unharmed
    assert waited < 10, waited  # not at its deadline (function timeout 30 s + grace)
    assert [e["errorType"] for e in lambda_env.stats()["errors"]] == ["MessageRefusedError"]
