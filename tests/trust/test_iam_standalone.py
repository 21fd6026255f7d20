"""Permissions proven: a standalone job on moto with IAM enforcement switched on, where the
user holds exactly the documented minimal policy and the workers exactly the policy
wrencore generated; and nothing secret in what the job stored, queued or booted with.

moto authorizes by resource for S3, SQS, IAM, STS, and — through the test server's shim
(tests/servers/moto_iam.py) — SSM and CloudWatch Logs. It evaluates no policy conditions and
checks EC2 actions against "*", so the fleet-tag conditions are not exercised here.
"""

from __future__ import annotations

import base64
import json
import os
import uuid

import boto3
import pytest

import wrencore
from tests.servers.fleet_harness import FleetHarness
from tests.trust.iam import ACCOUNT, ADMIN_POLICY, REGION
from tests.trust.iam import client as _client
from tests.trust.iam import denied as _denied
from tests.trust.iam import user as _user
from wrencore_aws_sqs_ec2.fleet import FLEET_TAG, user_policy

CANARY = "wrencore-canary-7f3a9c"


def triple(x):
    return 3 * x


def test_a_standalone_job_runs_with_the_documented_user_policy_and_generated_worker_policy(
        moto_iam, tmp_path, monkeypatch):
    endpoint = moto_iam.endpoint
    fleet, queue_name, bucket = (f"f{uuid.uuid4().hex[:6]}", f"q-{uuid.uuid4().hex[:6]}",
                                 f"b-{uuid.uuid4().hex[:8]}")
    s3, iam = boto3.client("s3"), boto3.client("iam")
    s3.create_bucket(Bucket=bucket)
    ami = boto3.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    admin = _user(iam, "admin", ADMIN_POLICY)
    policy = user_policy(region=REGION, account=ACCOUNT, bucket=bucket, prefix="jobs/",
                         queue_name=queue_name, fleet=fleet)
    deployer = _user(iam, "deployer", policy)
    # Another fleet's instance and another queue, for the negative checks.
    other = boto3.client("ec2").run_instances(
        ImageId=ami, MinCount=1, MaxCount=1, TagSpecifications=[{
            "ResourceType": "instance", "Tags": [{"Key": FLEET_TAG, "Value": "other"}]}],
    )["Instances"][0]["InstanceId"]
    other_queue = boto3.client("sqs").create_queue(QueueName="other-queue")["QueueUrl"]
    boto3.client("sqs").send_message(QueueUrl=other_queue, MessageBody="not yours")
    s3.put_object(Bucket=bucket, Key="private/secret.txt", Body=b"not yours")
    moto_iam.enforce()

    # The user: exactly the documented policy, plus recognisable secrets in the environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", deployer["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", deployer["SecretAccessKey"])
    monkeypatch.setenv("MY_SERVICE_TOKEN", CANARY)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the credentials it found
    admin_env = {"AccessKeyId": admin["AccessKeyId"],
                 "SecretAccessKey": admin["SecretAccessKey"]}
    config = {"aws_sqs_ec2": {"queue_name": queue_name, "fleet": fleet, "ami": ami,
                              "min_instances": 1, "max_instances": 1, "visibility_timeout": 5,
                              "max_receives": 3, "idle_timeout": 600, "poll_wait": 1,
                              "dead_letter_check_interval": 0.5},
              "s3": {"bucket": bucket, "prefix": "jobs"}}
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        futures = executor.map_futures(triple, range(6), extra_env={"JOB_ONLY": "job-value"})
        failed = [f.exception() for f in futures if f.done()]
        assert not failed, failed
        admin_sqs = _client("sqs", admin_env, endpoint)
        queue_url = admin_sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        bodies = [m["Body"] for m in admin_sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]]
        # The workers: credentials of the role wrencore generated, as the instance gets them.
        # EC2 hands an instance its role's credentials; the test plays EC2 (moto cannot
        # evaluate the role's trust in ec2.amazonaws.com).
        role = f"arn:aws:iam::{ACCOUNT}:role/wrencore-{fleet}-worker"
        moto_iam.enforce(False)
        worker = _client("sts", admin_env, endpoint).assume_role(
            RoleArn=role, RoleSessionName="worker")["Credentials"]
        moto_iam.enforce()
        worker_env = {"AWS_ACCESS_KEY_ID": worker["AccessKeyId"],
                      "AWS_SECRET_ACCESS_KEY": worker["SecretAccessKey"],
                      "AWS_SESSION_TOKEN": worker["SessionToken"],
                      "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION,
                      "MY_SERVICE_TOKEN": "", "WRENCORE_AWS_SQS_EC2__CLOUDWATCH": "false"}
        with monkeypatch.context() as harness_env:  # the harness plays EC2: it sees all
            harness_env.setenv("AWS_ACCESS_KEY_ID", admin["AccessKeyId"])
            harness_env.setenv("AWS_SECRET_ACCESS_KEY", admin["SecretAccessKey"])
            harness_env.setattr(boto3, "DEFAULT_SESSION", None)
            harness = FleetHarness(worker_env, fleet, numprocs=1).__enter__()
        try:
            try:
                results = wrencore.get_all_results(futures, timeout=90)
            except TimeoutError:
                boot = "".join(open(os.path.join(i.root, "supervisord.out"), errors="replace")
                               .read()[-3000:] for i in harness.instances.values())
                executor.shutdown(wait=False, cancel_futures=True)
                pytest.fail(f"the workers did not finish:\n{boot}\n{harness.logs()[-6000:]}")
            assert results == [3 * x for x in range(6)]
        finally:
            harness.stop()
        user_data = [base64.b64decode(_client("ec2", admin_env, endpoint).describe_instance_attribute(
            InstanceId=i.id, Attribute="userData")["UserData"]["Value"]).decode()
            for i in harness.instances.values()]

    assert moto_iam.denials() == [], "the user or the workers lacked a permission"

    # Worker credentials reach nothing beyond the job prefix, their queue and their key.
    s3w, sqsw = _client("s3", worker, endpoint), _client("sqs", worker, endpoint)
    s3w.put_object(Bucket=bucket, Key="jobs/probe", Body=b"ok")
    _denied(lambda: s3w.get_object(Bucket=bucket, Key="private/secret.txt"))
    _denied(lambda: s3w.put_object(Bucket=bucket, Key="private/x", Body=b"x"))
    _denied(lambda: sqsw.receive_message(QueueUrl=other_queue))
    _denied(lambda: sqsw.send_message(QueueUrl=queue_url, MessageBody="forged"))
    _denied(lambda: _client("ec2", worker, endpoint).terminate_instances(InstanceIds=[other]))
    _denied(lambda: _client("ssm", worker, endpoint).put_parameter(
        Name="/wrencore/task-key", Value="x", Type="SecureString", Overwrite=True))
    _denied(lambda: _client("iam", worker, endpoint).create_user(UserName="escalate"))
    # ... nor do the user's.
    _denied(lambda: boto3.client("s3").get_object(Bucket=bucket, Key="private/secret.txt"))
    _denied(lambda: boto3.client("sqs").receive_message(QueueUrl=other_queue))

    # No secret travelled: not in any stored object, queue message or user-data document.
    admin_s3 = _client("s3", admin_env, endpoint)
    keys = [o["Key"] for page in admin_s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket) for o in page.get("Contents", [])]
    stored = {key: admin_s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}
    assert len(bodies) >= 1 and len(user_data) == 1 and len(stored) > 5
    task_key = _client("ssm", admin_env, endpoint).get_parameter(
        Name="/wrencore/task-key", WithDecryption=True)["Parameter"]["Value"]
    secrets = [CANARY, deployer["SecretAccessKey"], admin["SecretAccessKey"],
               worker["SecretAccessKey"]] + [k["secret"] for k in json.loads(task_key)["keys"]]
    documents = [(f"s3://{bucket}/{k}", v) for k, v in stored.items()] + \
        [("queue message", b.encode()) for b in bodies] + \
        [("user-data", u.encode()) for u in user_data]
    for where, data in documents:
        for secret in secrets:
            assert secret.encode() not in data, f"a secret travelled in {where}"
            assert base64.b64encode(secret.encode()) not in data, f"a secret in {where}"
    # extra_env is the one environment that travels, in its own job only.
    assert all(b"job-value" in body.encode() for body in bodies)
    assert not any(b"job-value" in data for where, data in documents
                   if where.startswith("user-data"))
