"""Registers the ``aws_sqs_ec2`` backend, the ``sqs`` queue, the ``ec2`` instance provider,
the standalone daemon's instance id, CloudWatch log handlers and idle termination, and the
``wrencore standalone`` commands. Importing this module does not import boto3."""

from __future__ import annotations

import logging
from typing import Any, List, Mapping, Optional

from wrencore import hookimpl

AWS_INSTALL = "pip install 'wrencore[aws]'"
STANDALONE_INSTALL = "pip install 'wrencore[standalone]'"


@hookimpl
def wrencore_register_backends(register) -> None:
    register("aws_sqs_ec2", "wrencore_aws_sqs_ec2.backend:StandaloneBackend",
             requires=("boto3",), install=AWS_INSTALL,
             description="an EC2 fleet pulling calls from an SQS queue (config [aws_sqs_ec2])")


@hookimpl
def wrencore_register_settings(register) -> None:
    from wrencore.settings import Setting

    from .settings import DOC, SECTION, SETTINGS

    register(SECTION, SETTINGS, doc=DOC)
    register("sqs", [
        Setting("name", "str", None, "The queue's name (required); its dead-letter queue is "
                "`{name}-dlq`.", required=True),
        Setting("region", "str", None, "The queue's region; unset: boto3's."),
        Setting("max_receives", "int", 3, "Receives before a message moves to the "
                "dead-letter queue.", minimum=1),
        Setting("visibility_timeout", "int", 30, "Seconds a received message stays hidden.",
                minimum=0, maximum=43200),
        Setting("create", "bool", True, "Create the queues if missing."),
    ], doc="The `sqs` queue, for the `queue` backend with workers started by "
           "`wrencore worker --queue sqs`.")


@hookimpl
def wrencore_register_queues(register) -> None:
    register("sqs", "wrencore_aws.sqs:SQSQueue", requires=("boto3",),
             install=AWS_INSTALL, description="Amazon SQS with a dead-letter queue")


@hookimpl
def wrencore_register_instance_providers(register) -> None:
    register("ec2", "wrencore_aws_sqs_ec2.fleet:EC2Provider", requires=("boto3",),
             install=AWS_INSTALL, description="EC2 instances of a standalone fleet")


@hookimpl
def wrencore_instance_id(config: Mapping[str, Any]) -> Optional[str]:
    """The EC2 instance id, when the config names a metadata service."""
    base = config.get("metadata_url")
    if not base:
        return None
    from .instance import fetch_instance_id

    try:
        return fetch_instance_id(base)
    except RuntimeError:
        return None


@hookimpl
def wrencore_release_instance(instance_id: str, config: Mapping[str, Any]) -> Optional[bool]:
    """Terminate an idle instance this plugin launched, keeping ``min_instances`` alive."""
    if config.get("provider") != "ec2":
        return None
    from .instance import release_ec2_instance

    fleet = config.get("provider_config") or {}
    return release_ec2_instance(instance_id, config.get("region") or "",
                                fleet=str(fleet.get("fleet") or ""),
                                min_instances=int(fleet.get("min_instances") or 0))


@hookimpl
def wrencore_worker_log_handlers(component: str, instance_id: str, process_name: str,
                                 config: Mapping[str, Any]) -> Optional[List[logging.Handler]]:
    if component != "standalone-daemon" or not config.get("cloudwatch", True):
        return None
    from wrencore_runtime.daemon import stream_name

    from .instance import DEFAULT_LOG_GROUP, cloudwatch_handler

    handler = cloudwatch_handler(config.get("log_group") or DEFAULT_LOG_GROUP,
                                 stream_name(instance_id, process_name),
                                 config.get("region") or "",
                                 float(config.get("log_send_interval") or 5.0))
    return [handler] if handler is not None else None


@hookimpl
def wrencore_check_config(backend, config, report) -> None:
    if backend == "aws_sqs_ec2":
        from .checks import check

        check(config, report)


@hookimpl
def wrencore_register_commands(cli) -> None:
    from .cli import add_commands

    add_commands(cli)


@hookimpl
def wrencore_call_logs(backend, config, job_id, call_id):
    """A call's lines in the fleet's CloudWatch log group (streams ``{instance}-{process}``)."""
    if backend != "aws_sqs_ec2":
        return None
    from wrencore_aws.clients import make_client
    from wrencore_aws.logs import call_log_lines

    from .instance import DEFAULT_LOG_GROUP
    from .settings import SECTION

    section = config.section(SECTION)
    client = make_client("logs", {"region": section.get("region")})
    return call_log_lines(client, [section.get("log_group") or DEFAULT_LOG_GROUP],
                          job_id, call_id)


@hookimpl
def wrencore_task_key_source(backend, config):
    """The SSM parameter ``[aws_sqs_ec2] task_key``."""
    if backend != "aws_sqs_ec2":
        return None
    from wrencore_aws.keys import client_key_source

    from .settings import StandaloneSettings

    settings = StandaloneSettings.from_config(config)
    return client_key_source(settings.task_key, config.section("aws_sqs_ec2"),
                             settings.task_key_kms_key_id)
