"""What a worker needs to know about its EC2 instance: its id (instance metadata), its
logs (CloudWatch) and how to give it back (TerminateInstances). Used on the instance by
the daemon's entry point, through this plugin's hooks."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from typing import Optional

logger = logging.getLogger(__name__)

DEFAULT_METADATA_URL = "http://169.254.169.254"
DEFAULT_LOG_GROUP = "wrencore-standalone"


def fetch_instance_id(base_url: str = DEFAULT_METADATA_URL, timeout: float = 2.0,
                      attempts: int = 5) -> str:
    """The instance id from the metadata service (IMDSv2 token, falling back to v1)."""
    base = base_url.rstrip("/")
    last_error: Optional[BaseException] = None
    for attempt in range(attempts):
        headers = {}
        try:
            request = urllib.request.Request(
                f"{base}/latest/api/token", method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                headers["X-aws-ec2-metadata-token"] = response.read().decode()
        except urllib.error.HTTPError:
            pass  # IMDSv1 only
        except OSError as exc:
            last_error = exc
            time.sleep(min(2 ** attempt * 0.2, 2))
            continue
        try:
            request = urllib.request.Request(f"{base}/latest/meta-data/instance-id",
                                             headers=headers)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read().decode().strip()
        except OSError as exc:
            last_error = exc
            time.sleep(min(2 ** attempt * 0.2, 2))
    raise RuntimeError(f"cannot read the instance id from {base}: {last_error}")


def terminate_instance_ec2(instance_id: str, region: str = "") -> None:
    import boto3

    boto3.client("ec2", region_name=region or None).terminate_instances(
        InstanceIds=[instance_id])


def cloudwatch_handler(log_group: str, stream: str, region: str = "",
                       send_interval: float = 5.0) -> Optional[logging.Handler]:
    """A watchtower handler on ``log_group``/``stream``, or None if CloudWatch is unreachable.

    Later outages or throttling drop batches with a warning, while the local log file
    (supervisord's capture of stderr) keeps every line.
    """
    try:
        import boto3
        import watchtower
        from botocore.config import Config

        client = boto3.client("logs", region_name=region or None, config=Config(
            connect_timeout=2, read_timeout=5, retries={"max_attempts": 2}))
        handler = watchtower.CloudWatchLogHandler(
            log_group_name=log_group, log_stream_name=stream, boto3_client=client,
            send_interval=send_interval,
        )
    except Exception as exc:
        logger.warning("CloudWatch Logs unavailable (%s: %s); logging to local files only",
                       type(exc).__name__, exc)
        return None
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


def live_fleet(fleet: str, region: str = "") -> list:
    """The ids of the fleet's live instances, oldest first."""
    import boto3

    ec2 = boto3.client("ec2", region_name=region or None)
    found = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "tag:wrencore:fleet", "Values": [fleet]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]}]):
        for reservation in page["Reservations"]:
            found += [(i["LaunchTime"], i["InstanceId"]) for i in reservation["Instances"]]
    return [instance_id for _launched, instance_id in sorted(found)]


def release_ec2_instance(instance_id: str, region: str = "", fleet: str = "",
                         min_instances: int = 0) -> bool:
    """Terminate this idle instance, unless it is one of the fleet's ``min_instances``
    oldest: those stay, so instances idling out together never take the fleet below its
    minimum."""
    if min_instances > 0 and fleet:
        live = live_fleet(fleet, region)
        if instance_id in live[:min_instances]:
            logger.info("%s is one of the %d oldest of fleet %s (min_instances): it stays",
                        instance_id, min_instances, fleet)
            return False
    terminate_instance_ec2(instance_id, region)
    return True
