"""Registers the S3 storage. Importing this module does not import boto3."""

from __future__ import annotations

from wrencore import hookimpl

AWS_INSTALL = "pip install 'wrencore[aws]'"


@hookimpl
def wrencore_register_storages(register) -> None:
    register("s3", "wrencore_aws.storage:s3_storage", requires=("boto3",), install=AWS_INSTALL,
             description="Amazon S3 (bucket and key prefix from config [s3])")
