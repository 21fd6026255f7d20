"""What the user's AWS identity needs, in one place: ``wrencore config check`` verifies it
and the backend pages of the docs print it (``python -m wrencore.docs``).

Nothing here imports boto3 at import time.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from wrencore.config import Config

Report = Callable[..., None]

STORAGE_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
COMPLETION_ACTIONS = ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
                      "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteQueue"]
#: A Lambda function's failure queue (its on-failure destination): created at deploy, peeked
#: by clients, deleted with the function.
FAILURE_QUEUE_ACTIONS = ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
                         "sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:DeleteQueue"]
LAMBDA_ACTIONS = ["lambda:CreateFunction", "lambda:UpdateFunctionCode",
                  "lambda:UpdateFunctionConfiguration", "lambda:GetFunctionConfiguration",
                  "lambda:PutFunctionEventInvokeConfig", "lambda:GetFunctionEventInvokeConfig",
                  "lambda:InvokeFunction",
                  "lambda:ListFunctions", "lambda:DeleteFunction",
                  "lambda:PublishLayerVersion", "lambda:ListLayerVersions",
                  "lambda:GetLayerVersion"]
LAMBDA_ROLE_ACTIONS = ["iam:GetRole", "iam:CreateRole", "iam:PutRolePolicy", "iam:PassRole",
                       "iam:ListRolePolicies", "iam:DeleteRolePolicy", "iam:DeleteRole"]
EC2_ACTIONS = ["ec2:RunInstances", "ec2:DescribeInstances", "ec2:DescribeInstanceAttribute",
               "ec2:TerminateInstances", "ec2:CreateTags", "ec2:DescribeImages",
               "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"]
FLEET_QUEUE_ACTIONS = ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
                       "sqs:SetQueueAttributes", "sqs:SendMessage", "sqs:ReceiveMessage",
                       "sqs:DeleteMessage", "sqs:PurgeQueue"]
FLEET_ROLE_ACTIONS = ["iam:GetRole", "iam:CreateRole", "iam:PutRolePolicy", "iam:PassRole",
                      "iam:GetInstanceProfile", "iam:CreateInstanceProfile",
                      "iam:AddRoleToInstanceProfile"]


def user_policy(backend: str, bucket: str = "BUCKET", prefix: str = "wrencore",
                name_prefix: str = "wrencore") -> Dict[str, Any]:
    """The IAM policy the user running ``backend`` needs (least privilege by name)."""
    statements = [
        {"Sid": "JobStorage", "Effect": "Allow",
         "Action": [a for a in STORAGE_ACTIONS if a != "s3:ListBucket"],
         "Resource": f"arn:aws:s3:::{bucket}/{prefix}/*"},
        {"Sid": "JobListing", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{bucket}"},
        {"Sid": "CompletionQueues", "Effect": "Allow", "Action": COMPLETION_ACTIONS,
         "Resource": "arn:aws:sqs:*:*:wrencore-done-*"},
    ]
    if backend == "aws_lambda":
        statements += [
            {"Sid": "Functions", "Effect": "Allow",
             "Action": [a for a in LAMBDA_ACTIONS if a != "lambda:ListFunctions"],
             "Resource": [f"arn:aws:lambda:*:*:function:{name_prefix}-*",
                          "arn:aws:lambda:*:*:layer:wrencore-*"]},
            {"Sid": "ListFunctions", "Effect": "Allow", "Action": "lambda:ListFunctions",
             "Resource": "*"},
            {"Sid": "ExecutionRoles", "Effect": "Allow", "Action": LAMBDA_ROLE_ACTIONS,
             "Resource": f"arn:aws:iam::*:role/{name_prefix}-*"},
            {"Sid": "ReadLogs", "Effect": "Allow",
             "Action": ["logs:FilterLogEvents", "logs:GetLogEvents"],
             "Resource": f"arn:aws:logs:*:*:log-group:/aws/lambda/{name_prefix}-*"},
            {"Sid": "FailureQueues", "Effect": "Allow", "Action": FAILURE_QUEUE_ACTIONS,
             "Resource": f"arn:aws:sqs:*:*:{name_prefix}-*-dlq"},
        ]
    elif backend == "aws_sqs_ec2":
        statements += [
            {"Sid": "Fleet", "Effect": "Allow", "Action": EC2_ACTIONS, "Resource": "*"},
            {"Sid": "TaskQueue", "Effect": "Allow", "Action": FLEET_QUEUE_ACTIONS,
             "Resource": "arn:aws:sqs:*:*:wrencore-*"},
            {"Sid": "InstanceRole", "Effect": "Allow", "Action": FLEET_ROLE_ACTIONS,
             "Resource": ["arn:aws:iam::*:role/wrencore-*",
                          "arn:aws:iam::*:instance-profile/wrencore-*"]},
            {"Sid": "ReadLogs", "Effect": "Allow",
             "Action": ["logs:FilterLogEvents", "logs:GetLogEvents"],
             "Resource": "arn:aws:logs:*:*:log-group:wrencore-*"},
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def user_policy_json(backend: str) -> str:
    return json.dumps(user_policy(backend), indent=2)


# -- checks ------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    from wrencore.cli import describe_error

    return describe_error(exc) or f"{type(exc).__name__}: {exc}"


def check_identity(section: Dict[str, Any], report: Report) -> Optional[Tuple[str, str]]:
    """Credentials and region; ``(caller arn, region)`` or None when either is missing."""
    import boto3

    from .clients import make_client

    session = boto3.session.Session()
    region = section.get("region") or session.region_name
    if not region:
        report("region", False, "no AWS region: set AWS_DEFAULT_REGION (e.g. export "
                                "AWS_DEFAULT_REGION=us-east-1), region in ~/.aws/config, or region "
                                "in the backend's table")
        return None
    report("region", True, region)
    if session.get_credentials() is None:
        report("credentials", False, "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                                     "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run "
                                     "`aws configure`")
        return None
    try:
        arn = make_client("sts", section).get_caller_identity()["Arn"]
    except Exception as exc:
        report("credentials", False, _one_line(exc))
        return None
    report("credentials", True, arn)
    return arn, region


def check_bucket(config: Config, report: Report) -> Optional[Any]:
    """The ``[s3]`` bucket exists and the prefix can be written, read and deleted."""
    from .storage import s3_storage

    section = config.section("s3")
    if not section.get("bucket"):
        report("bucket", False, "no bucket: set [s3] bucket = \"NAME\" (create one with "
                                "`aws s3 mb s3://NAME`)")
        return None
    try:
        storage = s3_storage(section)
        storage.client.head_bucket(Bucket=storage.bucket)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        detail = (f"bucket {section['bucket']!r} does not exist: create it (`aws s3 mb "
                  f"s3://{section['bucket']}`) or fix [s3] bucket"
                  if code in ("404", "NoSuchBucket", "NotFound") else _one_line(exc))
        report("bucket", False, detail)
        return None
    report("bucket", True, f"s3://{storage.bucket}/{storage.prefix}")
    probe = ".wrencore-config-check"
    try:
        storage.put(probe, b"ok")
        assert storage.get(probe) == b"ok"
        storage.list(probe)
        storage.delete_prefix(probe)
    except Exception as exc:
        report("storage permissions", False, f"{_one_line(exc)} (needs "
                                             f"{', '.join(STORAGE_ACTIONS)} on the prefix)")
        return None
    report("storage permissions", True, "write, read, list and delete under the prefix")
    return storage


def check_actions(section: Dict[str, Any], caller: str, actions: List[str],
                  report: Report, what: str) -> None:
    """The caller's IAM policies allow ``actions`` (IAM's policy simulator)."""
    from .clients import make_client

    if ":assumed-role/" in caller:
        # the simulator wants the role, not the session
        _, account_part = caller.split(":assumed-role/", 1)
        account = caller.split(":")[4]
        caller = f"arn:aws:iam::{account}:role/{account_part.split('/')[0]}"
    try:
        results = make_client("iam", section).simulate_principal_policy(
            PolicySourceArn=caller, ActionNames=actions)["EvaluationResults"]
    except Exception as exc:
        report(what, True, f"not verified: the IAM policy simulator is not available "
                           f"({_one_line(exc)}); the policy needed is in the docs")
        return
    denied = [r["EvalActionName"] for r in results if r.get("EvalDecision") != "allowed"]
    report(what, not denied, f"denied: {', '.join(denied)}" if denied else
           f"{len(actions)} actions allowed")
