"""Permissions proven for the Lambda backend: on moto with IAM enforcement switched on, a
user holding exactly ``wrencore_aws_lambda.deploy.user_policy`` deploys the function and runs
a job, and the function's sandboxes hold exactly the execution role wrencore generated (the
harness assumes it as Lambda does, tests/servers/lambda_harness.py). The same role's
credentials are denied outside the job prefix, other queues, other functions and the task
key's writes; the user's are denied outside the prefix and outside its functions and roles.

moto authorizes by resource for S3, SQS, IAM and STS; the shim of tests/servers/moto_iam.py
adds Lambda functions and layers, SSM parameters and CloudWatch log groups, and has the
harness's Invoke authorized by moto as the caller's.
"""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

import wrencore
from tests.servers import procs
from tests.servers.lambda_harness import LambdaHarness
from tests.servers.moto_iam import SERVICE_PRINCIPAL
from tests.trust.iam import ACCOUNT, ADMIN_POLICY, REGION, client, denied, user
from wrencore_aws_lambda.deploy import user_policy


def whoami(x):
    import logging

    import boto3

    logging.getLogger("whoami").warning("whoami %s", x)
    return x, boto3.client("sts").get_caller_identity()["Arn"]


def size(data):
    return len(data)


def big_result(n):
    return b"r" * n


@pytest.fixture
def enforced_harness(moto_iam, tmp_path):
    """A Lambda harness in front of the enforcing moto, playing the service as ``admin``."""
    admin = user(boto3.client("iam"), "admin", ADMIN_POLICY)
    harness = LambdaHarness(moto_iam.endpoint, str(tmp_path), concurrency=2,
                            authorize_invokes=True,
                            access_key=(admin["AccessKeyId"], admin["SecretAccessKey"]))
    harness.admin = admin
    yield harness
    harness.stop()


def test_a_lambda_job_runs_with_the_documented_user_policy_and_generated_role(
        moto_iam, enforced_harness, monkeypatch):
    endpoint, admin = moto_iam.endpoint, enforced_harness.admin
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    boto3.client("s3").put_object(Bucket=bucket, Key="private/secret.txt", Body=b"not yours")
    other_queue = boto3.client("sqs").create_queue(QueueName="other-queue")["QueueUrl"]
    boto3.client("sqs").send_message(QueueUrl=other_queue, MessageBody="not yours")
    # A customer-managed key encrypts the job's objects and the task key.
    key = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    deployer = user(boto3.client("iam"), "deployer", user_policy(
        region=REGION, account=ACCOUNT, bucket=bucket, prefix="jobs/", sse_kms_key_id=key,
        task_key_kms_key_id=key))
    moto_iam.enforce()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", deployer["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", deployer["SecretAccessKey"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", enforced_harness.endpoint)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the credentials it found
    config = {"storage": "s3",
              "s3": {"bucket": bucket, "prefix": "jobs", "sse": "aws:kms", "sse_kms_key_id": key},
              "aws_lambda": {"timeout": 30, "result_grace": 5, "invoke_threads": 4,
                             "task_key_kms_key_id": key}}
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        identities = executor.map_futures(whoami, range(3))
        staged = executor.submit(size, b"a" * 100_000)  # arguments staged in S3
        large = executor.submit(big_result, 200_000)  # a result stored in S3
        results = wrencore.get_all_results(identities + [staged, large], timeout=120)
        function = executor.backend.function()
    # The role wrote the function's logs; the user reads them.
    procs.wait_until(lambda: "whoami 1" in identities[1].logs(source="cloud"), 20,
                     "the call's lines in CloudWatch Logs")
    assert moto_iam.denials() == [], "the user or the role lacked a permission"
    assert [r[0] for r in results[:3]] == [0, 1, 2]
    assert results[3:] == [100_000, b"r" * 200_000]
    # The sandboxes held the function's execution role, not the harness's or the user's.
    assert {r[1].rsplit("/", 1)[0] for r in results[:3]} == {
        f"arn:aws:sts::{ACCOUNT}:assumed-role/{function.name[:64]}"}
    keys = [o["Key"] for o in client("s3", admin, endpoint).list_objects_v2(
        Bucket=bucket, Prefix="jobs/")["Contents"]]
    assert any(k.endswith("args.pickle") for k in keys), keys
    # Every object, the client's and the workers' (statuses, results), was encrypted with
    # the customer key, which the role may use.
    s3a = client("s3", admin, endpoint)
    encryption = {k: (head["ServerSideEncryption"], head["SSEKMSKeyId"]) for k in keys
                  for head in [s3a.head_object(Bucket=bucket, Key=k)]}
    assert set(encryption.values()) == {("aws:kms", key)} and any(
        "status" in k for k in keys), encryption
    task_key = client("ssm", admin, endpoint).describe_parameters(ParameterFilters=[
        {"Key": "Name", "Values": ["/wrencore/task-key"]}])["Parameters"][0]
    assert task_key["KeyId"] == key
    role_policy = client("iam", admin, endpoint).get_role_policy(
        RoleName=function.name[:64], PolicyName="wrencore-runtime")["PolicyDocument"]
    role_policy = json.loads(role_policy) if isinstance(role_policy, str) else role_policy
    assert {"Sid": "KmsKey1", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": key} in role_policy["Statement"]

    # The role's credentials reach nothing beyond the job prefix, the completion queues,
    # their own log group and reading the task key.
    role = client("sts", admin, endpoint)
    role.meta.events.register("before-send.sts.AssumeRole", lambda request, **_: request.headers
                              .__setitem__(SERVICE_PRINCIPAL, "lambda.amazonaws.com"))
    session = role.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{function.name[:64]}",
                               RoleSessionName="probe")["Credentials"]
    s3r, sqsr = client("s3", session, endpoint), client("sqs", session, endpoint)
    s3r.put_object(Bucket=bucket, Key="jobs/probe", Body=b"ok")
    assert s3r.get_object(Bucket=bucket, Key="jobs/probe")["Body"].read() == b"ok"
    denied(lambda: s3r.get_object(Bucket=bucket, Key="private/secret.txt"))
    denied(lambda: s3r.put_object(Bucket=bucket, Key="private/x", Body=b"x"))
    denied(lambda: sqsr.receive_message(QueueUrl=other_queue))
    denied(lambda: sqsr.send_message(QueueUrl=other_queue, MessageBody="x"))
    denied(lambda: client("ssm", session, endpoint).put_parameter(
        Name="/wrencore/task-key", Value="x", Type="SecureString", Overwrite=True))
    client("ssm", session, endpoint).get_parameter(Name="/wrencore/task-key",
                                                  WithDecryption=True)
    denied(lambda: client("lambda", session, endpoint).get_function_configuration(
        FunctionName=function.name))
    denied(lambda: client("iam", session, endpoint).create_user(UserName="escalate"))
    denied(lambda: client("logs", session, endpoint).create_log_group(
        logGroupName="/aws/lambda/another-function"))
    # ... nor do the user's: other objects, queues, functions and roles.
    denied(lambda: boto3.client("s3").get_object(Bucket=bucket, Key="private/secret.txt"))
    denied(lambda: boto3.client("sqs").receive_message(QueueUrl=other_queue))
    denied(lambda: boto3.client("lambda").invoke(FunctionName="another-function", Payload=b"{}"))
    denied(lambda: boto3.client("iam").create_role(
        RoleName="another-role", AssumeRolePolicyDocument=json.dumps({})))
    denied(lambda: boto3.client("iam").create_user(UserName="escalate"))
