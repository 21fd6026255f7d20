"""``wrencore config check --backend aws_sqs_ec2``: what the fleet needs, read-only."""

from __future__ import annotations

from typing import Callable

from wrencore.config import Config
from wrencore_aws.permissions import (EC2_ACTIONS, FLEET_QUEUE_ACTIONS, FLEET_ROLE_ACTIONS,
                                      STORAGE_ACTIONS, _one_line, check_actions, check_bucket,
                                      check_identity)


def check(config: Config, report: Callable[..., None]) -> None:
    from wrencore_aws.clients import make_client

    from .settings import SECTION, StandaloneSettings

    settings = StandaloneSettings.from_config(config)
    section = dict(config.section(SECTION))
    identity = check_identity(section, report)
    if identity is None:
        return
    check_bucket(config, report)
    ec2 = make_client("ec2", section)
    if not settings.ami:
        report("AMI", False, "no image: set [aws_sqs_ec2] ami = \"ami-…\" (a Debian or Ubuntu "
                             "image with cloud-init in this region)")
    else:
        try:
            images = ec2.describe_images(ImageIds=[settings.ami])["Images"]
            report("AMI", bool(images), f"{settings.ami}" if images else
                   f"{settings.ami} is not visible in {identity[1]}")
        except Exception as exc:
            report("AMI", False, f"{settings.ami}: {_one_line(exc)}")
    if settings.subnet_id:
        try:
            ec2.describe_subnets(SubnetIds=[settings.subnet_id])
            report("subnet", True, settings.subnet_id)
        except Exception as exc:
            report("subnet", False, f"{settings.subnet_id}: {_one_line(exc)}")
    if settings.security_group_ids:
        try:
            ec2.describe_security_groups(GroupIds=settings.security_group_ids)
            report("security groups", True, ", ".join(settings.security_group_ids))
        except Exception as exc:
            report("security groups", False, _one_line(exc))
    sqs = make_client("sqs", section)
    try:
        sqs.get_queue_url(QueueName=settings.queue_name)
        report("task queue", True, settings.queue_name)
    except Exception as exc:
        if "NonExistentQueue" not in str(exc) and "QueueDoesNotExist" not in str(exc):
            report("task queue", False, _one_line(exc))
        else:
            report("task queue", True, f"{settings.queue_name} does not exist yet; the first "
                                       f"job or `wrencore standalone launch` creates it")
    if settings.instance_profile:
        try:
            make_client("iam", section).get_instance_profile(
                InstanceProfileName=settings.instance_profile)
            report("instance profile", True, settings.instance_profile)
        except Exception as exc:
            report("instance profile", False, f"{settings.instance_profile}: "
                                              f"{_one_line(exc)}")
    actions = STORAGE_ACTIONS + EC2_ACTIONS + FLEET_QUEUE_ACTIONS + \
        ([] if settings.instance_profile else FLEET_ROLE_ACTIONS)
    check_actions(section, identity[0], actions, report, "IAM permissions")
