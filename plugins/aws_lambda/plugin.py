"""Registers the ``aws_lambda`` backend and the ``wrencore lambda`` commands.

Importing this module does not import boto3.
"""

from __future__ import annotations

from wrencore import hookimpl

AWS_INSTALL = "pip install 'wrencore[aws]'"


@hookimpl
def wrencore_register_backends(register) -> None:
    register("aws_lambda", "wrencore_aws_lambda.backend:LambdaBackend", requires=("boto3",),
             install=AWS_INSTALL,
             description="AWS Lambda: asynchronous invocations, results in S3")


@hookimpl
def wrencore_register_settings(register) -> None:
    from .settings import DOC, SECTION, SETTINGS

    register(SECTION, SETTINGS, doc=DOC)


@hookimpl
def wrencore_check_config(backend, config, report) -> None:
    if backend == "aws_lambda":
        from .checks import check

        check(config, report)


@hookimpl
def wrencore_register_commands(cli) -> None:
    from .cli import add_commands

    add_commands(cli)


@hookimpl
def wrencore_call_logs(backend, config, job_id, call_id):
    """A call's lines in its function's CloudWatch log group, ``/aws/lambda/<function>``."""
    if backend != "aws_lambda":
        return None
    from wrencore_aws.clients import make_client
    from wrencore_aws.logs import call_log_lines

    from .settings import SECTION

    section = config.section(SECTION)
    client = make_client("logs", {"region": section.get("region")})
    if section.get("function_name"):
        groups = [f"/aws/lambda/{section.get('function_name')}"]
    else:  # the functions this configuration deploys are named after its prefix
        prefix = f"/aws/lambda/{section.get('name_prefix') or 'wrencore'}-"
        groups = [g["logGroupName"] for g in client.describe_log_groups(
            logGroupNamePrefix=prefix, limit=50).get("logGroups", [])]
    return call_log_lines(client, groups, job_id, call_id)


@hookimpl
def wrencore_task_key_source(backend, config):
    """The SSM parameter ``[aws_lambda] task_key``."""
    if backend != "aws_lambda":
        return None
    from wrencore_aws.keys import client_key_source

    from .deploy import LambdaSettings

    settings = LambdaSettings.from_config(config)
    return client_key_source(settings.task_key, settings.client_section,
                             settings.task_key_kms_key_id)
