"""What AWS identities need, in one place: the actions ``wrencore config check`` verifies
for the user, and the statements the generated policies share (job storage, KMS keys). The
backends' full policies are ``wrencore_aws_lambda.deploy.user_policy`` and
``wrencore_aws_sqs_ec2.fleet.user_policy`` (the docs print them; tests/trust proves them).

Nothing here imports boto3 at import time.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from wrencore.config import Config

Report = Callable[..., None]

STORAGE_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
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


def storage_statements(bucket: str, prefix: str, *, delete: bool = True,
                       object_sid: str = "JobObjects", listing_sid: str = "JobListing"
                       ) -> List[Dict[str, Any]]:
    """The IAM statements for the job storage: objects under ``prefix`` in ``bucket``
    (get, put and, with ``delete``, delete), and listing the bucket under that prefix only."""
    actions = ["s3:GetObject", "s3:PutObject"] + (["s3:DeleteObject"] if delete else [])
    return [
        {"Sid": object_sid, "Effect": "Allow", "Action": actions,
         "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"},
        {"Sid": listing_sid, "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": f"{prefix}*"}}},
    ]


#: What each use of a customer-managed KMS key needs (S3 SSE-KMS, SQS SSE-KMS, SSM
#: SecureString), by who uses it.
KMS_WRITE = ["kms:GenerateDataKey", "kms:Decrypt"]  # S3 put and get; SQS send (and receive)
KMS_READ = ["kms:Decrypt"]  # SQS receive, SSM GetParameter with decryption
KMS_KEY_WRITE = ["kms:Encrypt", "kms:Decrypt"]  # SSM PutParameter (SecureString) and read
KMS_DESCRIBE = ["kms:DescribeKey"]  # a client resolving an alias for its workers' role


def kms_key_arn(key_id: str, *, region: str, account: str,
                client_section: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """The ARN IAM authorizes a KMS key's use against, or None for none to grant.

    A key ARN is kept; a key id is placed in ``region`` and ``account``; an alias (``alias/…``
    or an alias ARN) is resolved with ``kms:DescribeKey``. Empty and AWS-managed keys
    (``aws/s3``, ``alias/aws/…``) need no grant: their key policies admit the account's
    principals through the service.
    """
    key_id = (key_id or "").strip()
    if not key_id or key_id.startswith(("aws/", "alias/aws/")) or ":alias/aws/" in key_id:
        return None
    if key_id.startswith("arn:") and ":key/" in key_id:
        return key_id
    if key_id.startswith("alias/") or ":alias/" in key_id:
        from .clients import make_client

        section = dict(client_section or {}, region=region)
        return make_client("kms", section).describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    return f"arn:aws:kms:{region}:{account}:key/{key_id}"


def kms_statements(uses: List[Tuple[Optional[str], List[str]]]) -> List[Dict[str, Any]]:
    """One statement per customer-managed key, granting the actions of all its ``uses``
    (``(key ARN or None, actions)`` pairs; None is skipped)."""
    actions: Dict[str, List[str]] = {}
    for arn, needed in uses:
        if arn:
            have = actions.setdefault(arn, [])
            have += [a for a in needed if a not in have]
    return [{"Sid": f"KmsKey{n}", "Effect": "Allow", "Action": sorted(needed), "Resource": arn}
            for n, (arn, needed) in enumerate(sorted(actions.items()), 1)]


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
