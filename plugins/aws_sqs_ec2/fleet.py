"""The EC2 fleet: launching, listing and terminating worker instances.

Instances carry the tags ``wrencore:fleet`` (the fleet's name) and ``wrencore:queue`` (the
queue they pull from). Unless an instance profile is named in the config, the fleet gets
its own role and instance profile, ``wrencore-{fleet}-worker``, allowed exactly what a
worker does: receive, delete and extend messages of its queue; read and write objects under
the storage's prefix; write its CloudWatch log group; terminate instances of its own fleet.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any, Dict, List, Optional

from wrencore.backends import InstanceProvider
from wrencore.config import Config
from wrencore.errors import ConfigError
from wrencore_aws.clients import call_with_retries, make_client
from wrencore_aws.completion import list_statement, send_statement
from wrencore_aws.completion import QUEUE_PREFIX
from wrencore_aws.keys import DEFAULT_PARAMETER, key_read_statement, parameter_arn
from wrencore_aws.permissions import (KMS_DESCRIBE, KMS_KEY_WRITE, KMS_READ, KMS_WRITE,
                                      kms_key_arn,
                                      kms_statements, storage_statements)

from .settings import StandaloneSettings

logger = logging.getLogger(__name__)

FLEET_TAG = "wrencore:fleet"
QUEUE_TAG = "wrencore:queue"
LIVE_STATES = ("pending", "running")
EC2_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def worker_policy(*, queue_arn: str, bucket: Optional[str], prefix: str, log_group: str,
                  region: str, account: str, fleet: str,
                  task_key: str = DEFAULT_PARAMETER, sse_kms_key_id: str = "",
                  queue_kms_key_id: str = "", task_key_kms_key_id: str = "",
                  client_section: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The least-privilege policy of a fleet's workers (with the customer-managed KMS keys
    of the storage, the queue and the task key, if configured: an alias is resolved with
    DescribeKey through ``client_section``)."""
    statements: List[Dict[str, Any]] = [
        key_read_statement(region, account, task_key),
        {"Sid": "TaskQueue", "Effect": "Allow",
         "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
         "Resource": queue_arn},
        {"Sid": "Logs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [f"arn:aws:logs:{region}:{account}:log-group:{log_group}",
                      f"arn:aws:logs:{region}:{account}:log-group:{log_group}:*"]},
        # The log handler looks its group up by prefix: listing is authorized on every
        # group (names only, no events).
        {"Sid": "FindLogGroup", "Effect": "Allow", "Action": "logs:DescribeLogGroups",
         "Resource": f"arn:aws:logs:{region}:{account}:log-group:*"},
        send_statement(region, account),
        # Describe actions take no resource-level permissions: "*" is the only resource.
        # An idle instance counts its fleet so as not to fall below min_instances.
        {"Sid": "CountOwnFleet", "Effect": "Allow", "Action": "ec2:DescribeInstances",
         "Resource": "*"},
        {"Sid": "TerminateOwnFleet", "Effect": "Allow", "Action": "ec2:TerminateInstances",
         "Resource": f"arn:aws:ec2:{region}:{account}:instance/*",
         "Condition": {"StringEquals": {f"ec2:ResourceTag/{FLEET_TAG}": fleet}}},
    ]
    if bucket:
        statements += storage_statements(bucket, prefix, delete=False, object_sid="Storage",
                                         listing_sid="StorageList")
    where = {"region": region, "account": account, "client_section": client_section}
    statements += kms_statements([(kms_key_arn(sse_kms_key_id, **where), KMS_WRITE),
                                  (kms_key_arn(queue_kms_key_id, **where), KMS_READ),
                                  (kms_key_arn(task_key_kms_key_id, **where), KMS_READ)])
    return {"Version": "2012-10-17", "Statement": statements}


def user_policy(*, region: str, account: str, bucket: str, prefix: str,
                queue_name: str, fleet: str, task_key: str = DEFAULT_PARAMETER,
                log_group: str = "wrencore-standalone", sse_kms_key_id: str = "",
                queue_kms_key_id: str = "", task_key_kms_key_id: str = "") -> Dict[str, Any]:
    """The least a user needs to deploy and run the ``aws_sqs_ec2`` backend: the job
    storage's prefix, the fleet's queues and the client's completion queues, the task key,
    the fleet's worker role and instance profile (created on first use, passed to EC2),
    launching, listing and terminating the fleet's instances, reading the workers' log
    group (``Future.logs()``), and the customer-managed KMS
    keys of ``[s3] sse_kms_key_id``, ``queue_kms_key_id`` and ``task_key_kms_key_id`` if set.

    EC2 launches cannot be scoped to one fleet by resource: ``RunInstances`` and
    ``CreateTags`` are limited to requests tagging the instances with the fleet's tag, and
    ``TerminateInstances`` to instances that carry it.
    """
    sqs = f"arn:aws:sqs:{region}:{account}"
    where = {"region": region, "account": account}
    fleet_role = re.sub(r"[^\w+=,.@-]", "-", f"wrencore-{fleet}-worker")[:64]
    return {"Version": "2012-10-17", "Statement": storage_statements(bucket, prefix) + [
        {"Sid": "FleetQueues", "Effect": "Allow",
         "Action": ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
                    "sqs:SetQueueAttributes", "sqs:SendMessage", "sqs:ReceiveMessage",
                    "sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:PurgeQueue"],
         "Resource": [f"{sqs}:{queue_name}", f"{sqs}:{queue_name}-dlq"]},
        {"Sid": "CompletionQueues", "Effect": "Allow",
         "Action": ["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteQueue"],
         "Resource": f"{sqs}:{QUEUE_PREFIX}*"},
        list_statement(),
        {"Sid": "TaskKey", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:PutParameter"],
         "Resource": parameter_arn(region, account, task_key)},
        {"Sid": "WorkerRole", "Effect": "Allow",
         "Action": ["iam:CreateRole", "iam:GetRole", "iam:PutRolePolicy", "iam:PassRole",
                    "iam:TagRole"],
         "Resource": f"arn:aws:iam::{account}:role/{fleet_role}"},
        {"Sid": "WorkerInstanceProfile", "Effect": "Allow",
         "Action": ["iam:CreateInstanceProfile", "iam:GetInstanceProfile",
                    "iam:AddRoleToInstanceProfile"],
         "Resource": f"arn:aws:iam::{account}:instance-profile/{fleet_role}"},
        {"Sid": "WhoAmI", "Effect": "Allow", "Action": "sts:GetCallerIdentity",
         "Resource": "*"},
        {"Sid": "ListInstances", "Effect": "Allow",
         "Action": ["ec2:DescribeInstances", "ec2:DescribeInstanceAttribute"],
         "Resource": "*"},
        {"Sid": "LaunchFleetInstances", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateTags"], "Resource": "*",
         "Condition": {"StringEquals": {f"aws:RequestTag/{FLEET_TAG}": fleet}}},
        {"Sid": "LaunchFromImagesAndNetwork", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"arn:aws:ec2:{region}::image/*", f"arn:aws:ec2:{region}:{account}:*"],
         "Condition": {"StringNotLike": {"ec2:ResourceType": "instance"}}},
        {"Sid": "TerminateFleetInstances", "Effect": "Allow",
         "Action": "ec2:TerminateInstances",
         "Resource": f"arn:aws:ec2:{region}:{account}:instance/*",
         "Condition": {"StringEquals": {f"ec2:ResourceTag/{FLEET_TAG}": fleet}}},
        {"Sid": "ReadLogs", "Effect": "Allow",
         "Action": ["logs:FilterLogEvents", "logs:GetLogEvents"],
         "Resource": [f"arn:aws:logs:{region}:{account}:log-group:{log_group}",
                      f"arn:aws:logs:{region}:{account}:log-group:{log_group}:*"]},
    ] + kms_statements([
        (kms_key_arn(sse_kms_key_id, **where), KMS_WRITE + KMS_DESCRIBE),
        (kms_key_arn(queue_kms_key_id, **where), KMS_WRITE + KMS_DESCRIBE),
        (kms_key_arn(task_key_kms_key_id, **where), KMS_KEY_WRITE + KMS_DESCRIBE)])}


def user_policy_json() -> str:
    """:func:`user_policy` for the docs: any region and account, bucket ``BUCKET``, the
    default prefix, queue and fleet."""
    return json.dumps(user_policy(region="*", account="*", bucket="BUCKET", prefix="wrencore/",
                                  queue_name="wrencore-standalone", fleet="default"), indent=2)


class EC2Provider(InstanceProvider):
    """Worker instances of one fleet (config table ``[aws_sqs_ec2]``)."""

    def __init__(self, config: Config, settings: Optional[StandaloneSettings] = None) -> None:
        self.config = config
        self.settings = settings or StandaloneSettings.from_config(config)
        section = config.section("aws_sqs_ec2")
        self.ec2 = make_client("ec2", section, max_attempts=5)
        self._iam: Any = None
        self._section = section

    @property
    def iam(self) -> Any:
        if self._iam is None:
            self._iam = make_client("iam", self._section, max_attempts=5)
        return self._iam

    # -- IAM -------------------------------------------------------------------------
    def ensure_instance_profile(self, *, queue_arn: str, bucket: Optional[str],
                                prefix: str, sse_kms_key_id: str = "") -> str:
        """The fleet's instance profile name, created with its role and policy if missing.
        ``sse_kms_key_id``: the storage's customer-managed SSE-KMS key, if any."""
        if self.settings.instance_profile:
            return self.settings.instance_profile
        s = self.settings
        name = re.sub(r"[^\w+=,.@-]", "-", f"wrencore-{s.fleet}-worker")[:64]
        sts = make_client("sts", self._section)
        account = sts.get_caller_identity()["Account"]
        region = self.ec2.meta.region_name
        try:
            self.iam.create_role(RoleName=name,
                                 AssumeRolePolicyDocument=json.dumps(EC2_TRUST_POLICY),
                                 Description=f"wrencore standalone workers of fleet {s.fleet}",
                                 Tags=[{"Key": FLEET_TAG, "Value": s.fleet}])
        except self.iam.exceptions.EntityAlreadyExistsException:
            pass
        policy = worker_policy(queue_arn=queue_arn, bucket=bucket, prefix=prefix,
                               log_group=s.log_group, region=region, account=account,
                               fleet=s.fleet, task_key=s.task_key,
                               sse_kms_key_id=sse_kms_key_id,
                               queue_kms_key_id=s.queue_kms_key_id if s.queue_sse == "kms" else "",
                               task_key_kms_key_id=s.task_key_kms_key_id,
                               client_section=self._section)
        self.iam.put_role_policy(RoleName=name, PolicyName="wrencore-worker",
                                 PolicyDocument=json.dumps(policy))
        try:
            self.iam.create_instance_profile(InstanceProfileName=name)
        except self.iam.exceptions.EntityAlreadyExistsException:
            pass
        roles = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        if not any(r["RoleName"] == name for r in roles):
            self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        return name

    # -- InstanceProvider ------------------------------------------------------------
    def launch(self, count: int, **options: Any) -> List[str]:
        """Launch ``count`` instances of the fleet.

        Options: ``user_data`` (text, required), ``instance_profile`` (name),
        ``instance_type``, ``ami``, ``spot`` (bool) — defaults from the config.
        """
        if count <= 0:
            return []
        s = self.settings
        ami = options.get("ami") or s.ami
        if not ami:
            raise ConfigError("launching standalone workers needs an AMI: set [aws_sqs_ec2] "
                              "ami = \"ami-...\" (a Debian or Ubuntu image with cloud-init)")
        user_data = options.get("user_data")
        if not user_data:
            raise ValueError("launch needs the instances' user_data")
        request: Dict[str, Any] = {
            "ImageId": ami,
            "InstanceType": options.get("instance_type") or s.instance_type,
            "MinCount": count, "MaxCount": count,
            "UserData": user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                {"Key": FLEET_TAG, "Value": s.fleet},
                {"Key": QUEUE_TAG, "Value": s.queue_name},
                {"Key": "Name", "Value": f"wrencore-{s.fleet}"},
            ]}],
        }
        profile = options.get("instance_profile") or s.instance_profile
        if profile:
            request["IamInstanceProfile"] = {"Name": profile}
        if options.get("spot", s.spot):
            request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        if s.key_name:
            request["KeyName"] = s.key_name
        if s.subnet_id:
            request["SubnetId"] = s.subnet_id
        if s.security_group_ids:
            request["SecurityGroupIds"] = s.security_group_ids
        response = call_with_retries(lambda: self.ec2.run_instances(**request),
                                     retry_for=60, what="RunInstances")
        ids = [i["InstanceId"] for i in response["Instances"]]
        logger.info("launched %d instance(s) of fleet %s: %s", len(ids), s.fleet, ", ".join(ids))
        return ids

    def list(self, **filters: Any) -> List[Dict[str, Any]]:
        """The fleet's instances; ``states=[...]`` narrows by state (default: all)."""
        ec2_filters = [{"Name": f"tag:{FLEET_TAG}", "Values": [self.settings.fleet]}]
        if filters.get("states"):
            ec2_filters.append({"Name": "instance-state-name", "Values": list(filters["states"])})
        found = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=ec2_filters):
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                    found.append({
                        "id": inst["InstanceId"], "state": inst["State"]["Name"],
                        "type": inst.get("InstanceType"), "ami": inst.get("ImageId"),
                        "launch_timestamp": inst["LaunchTime"].timestamp(),
                        "spot": inst.get("InstanceLifecycle") == "spot",
                        "queue": tags.get(QUEUE_TAG), "fleet": tags.get(FLEET_TAG),
                    })
        return sorted(found, key=lambda i: (i["launch_timestamp"], i["id"]))

    def live(self) -> List[Dict[str, Any]]:
        return self.list(states=LIVE_STATES)

    def terminate(self, instance_ids: List[str]) -> None:
        if not instance_ids:
            return
        mine = {i["id"] for i in self.list()}
        strangers = sorted(set(instance_ids) - mine)
        if strangers:
            raise ValueError(f"not instances of fleet {self.settings.fleet!r}: "
                             f"{', '.join(strangers)}")
        self.ec2.terminate_instances(InstanceIds=list(instance_ids))
        logger.info("terminated %s", ", ".join(instance_ids))

    def user_data_of(self, instance_id: str) -> str:
        attribute = self.ec2.describe_instance_attribute(InstanceId=instance_id,
                                                         Attribute="userData")
        value = attribute.get("UserData", {}).get("Value", "")
        return base64.b64decode(value).decode() if value else ""
