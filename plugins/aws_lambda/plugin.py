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
