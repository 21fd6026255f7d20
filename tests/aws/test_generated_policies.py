"""Customer-managed KMS keys (and Lambda layers) in the generated policies: every configured key (S3 SSE-KMS,
SQS SSE-KMS, the task key's SSM encryption) is granted on its ARN with the actions its
users need, aliases resolved; AWS-managed keys need no grant. (moto does not authorize the
KMS use that S3, SQS and SSM make on a caller's behalf, so this checks the policies; the
Lambda job under IAM enforcement in tests/trust/test_iam_lambda.py runs with a customer key.)
"""

from __future__ import annotations

import boto3

from wrencore_aws_lambda.deploy import user_policy as lambda_user_policy
from wrencore_aws_sqs_ec2.fleet import user_policy as fleet_user_policy
from wrencore_aws_sqs_ec2.fleet import worker_policy

ACCOUNT, REGION = "123456789012", "us-east-1"


def _grants(policy):
    """{key ARN: sorted kms actions} of a policy's statements on KMS keys."""
    grants = {}
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        kms = [a for a in actions if a.startswith("kms:")]
        if kms:
            assert statement["Resource"].startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
            grants.setdefault(statement["Resource"], set()).update(kms)
    return {arn: sorted(actions) for arn, actions in grants.items()}


def test_customer_keys_are_granted_on_their_arns_with_the_actions_each_use_needs(aws_env):
    kms = boto3.client("kms")
    storage_key, queue_key, task_key = (kms.create_key()["KeyMetadata"] for _ in range(3))
    kms.create_alias(AliasName="alias/wrencore-queue", TargetKeyId=queue_key["KeyId"])
    keys = {"sse_kms_key_id": storage_key["Arn"],  # as an ARN
            "queue_kms_key_id": "alias/wrencore-queue",  # as an alias: resolved
            "task_key_kms_key_id": task_key["KeyId"]}  # as a bare key id

    workers = worker_policy(queue_arn="arn:aws:sqs:us-east-1:123456789012:q", bucket="b",
                            prefix="jobs/", log_group="g", region=REGION, account=ACCOUNT,
                            fleet="f", **keys)
    assert _grants(workers) == {
        storage_key["Arn"]: ["kms:Decrypt", "kms:GenerateDataKey"],  # S3 get and put
        queue_key["Arn"]: ["kms:Decrypt"],  # receive only: workers never send tasks
        task_key["Arn"]: ["kms:Decrypt"],  # read the key, never write it
    }
    user = fleet_user_policy(region=REGION, account=ACCOUNT, bucket="b", prefix="jobs/",
                             queue_name="q", fleet="f", **keys)
    assert _grants(user) == {
        storage_key["Arn"]: ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
        queue_key["Arn"]: ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
        task_key["Arn"]: ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt"],  # creates it
    }
    lambda_user = lambda_user_policy(region=REGION, account=ACCOUNT, bucket="b",
                                     prefix="jobs/", sse_kms_key_id=keys["sse_kms_key_id"],
                                     task_key_kms_key_id=keys["task_key_kms_key_id"])
    assert _grants(lambda_user) == {
        storage_key["Arn"]: ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
        task_key["Arn"]: ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt"],
    }


def test_one_key_for_everything_is_one_statement_and_aws_managed_keys_need_none(aws_env):
    key = boto3.client("kms").create_key()["KeyMetadata"]
    workers = worker_policy(queue_arn="arn:aws:sqs:us-east-1:123456789012:q", bucket="b",
                            prefix="jobs/", log_group="g", region=REGION, account=ACCOUNT,
                            fleet="f", sse_kms_key_id=key["Arn"], queue_kms_key_id=key["Arn"],
                            task_key_kms_key_id=key["Arn"])
    assert [s["Sid"] for s in workers["Statement"] if s["Sid"].startswith("Kms")] == ["KmsKey1"]
    assert _grants(workers) == {key["Arn"]: ["kms:Decrypt", "kms:GenerateDataKey"]}
    managed = worker_policy(queue_arn="arn:aws:sqs:us-east-1:123456789012:q", bucket="b",
                            prefix="jobs/", log_group="g", region=REGION, account=ACCOUNT,
                            fleet="f", sse_kms_key_id="", queue_kms_key_id="alias/aws/sqs",
                            task_key_kms_key_id="aws/ssm")
    assert _grants(managed) == {}


def test_the_fleet_role_wrencore_creates_holds_the_configured_keys(aws_env):
    import json

    from wrencore.config import Config
    from wrencore_aws_sqs_ec2.fleet import EC2Provider

    kms = boto3.client("kms")
    storage_key, queue_key = (kms.create_key()["KeyMetadata"] for _ in range(2))
    provider = EC2Provider(Config({"aws_sqs_ec2": {
        "fleet": "kms", "queue_sse": "kms", "queue_kms_key_id": queue_key["Arn"],
        "task_key_kms_key_id": "alias/aws/ssm"}}))
    name = provider.ensure_instance_profile(queue_arn="arn:aws:sqs:us-east-1:123456789012:q",
                                            bucket="b", prefix="jobs/",
                                            sse_kms_key_id=storage_key["KeyId"])
    policy = boto3.client("iam").get_role_policy(RoleName=name, PolicyName="wrencore-worker")
    document = policy["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    assert _grants(document) == {storage_key["Arn"]: ["kms:Decrypt", "kms:GenerateDataKey"],
                                 queue_key["Arn"]: ["kms:Decrypt"]}


def test_the_lambda_user_policy_covers_the_layers_wrencore_publishes_for_any_prefix():
    import re

    from wrencore_aws_lambda.layers import layer_name

    policy = lambda_user_policy(region=REGION, account=ACCOUNT, bucket="b", prefix="jobs/",
                                name_prefix="team-a")
    layers = next(s for s in policy["Statement"] if s["Sid"] == "Layers")["Resource"]
    name = layer_name({"python": "3.11", "hash": "0123456789abcdef" * 4})
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}"
    for candidate in (arn, arn + ":3"):  # the layer, and one of its versions
        assert any(re.fullmatch(p.replace("*", ".*"), candidate) for p in layers), candidate
    other = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:someone-elses"
    assert not any(re.fullmatch(p.replace("*", ".*"), other) for p in layers)
