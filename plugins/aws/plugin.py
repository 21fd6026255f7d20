"""Registers the S3 storage. Importing this module does not import boto3."""

from __future__ import annotations

from wrencore import hookimpl

AWS_INSTALL = "pip install 'wrencore[aws]'"


@hookimpl
def wrencore_register_storages(register) -> None:
    register("s3", "wrencore_aws.storage:s3_storage", requires=("boto3",), install=AWS_INSTALL,
             description="Amazon S3 (bucket and key prefix from config [s3])")


@hookimpl
def wrencore_register_settings(register) -> None:
    from wrencore.settings import Setting

    register("s3", [
        Setting("bucket", "str", None, "The bucket of job data (required; it must exist and "
                "be in the region the backend uses).", required=True),
        Setting("prefix", "str", "wrencore", "Key prefix of everything wrencore stores."),
        Setting("region", "str", None, "The bucket's region; unset: boto3's (`AWS_DEFAULT_REGION`, "
                "`~/.aws/config`)."),
        Setting("endpoint_url", "str", None, "An S3-compatible endpoint (MinIO, moto …)."),
        Setting("sse", "str", "AES256", "Server-side encryption of job data: `AES256` "
                "(SSE-S3), `aws:kms` (SSE-KMS), or empty for the bucket's default.",
                choices=("AES256", "aws:kms", "")),
        Setting("sse_kms_key_id", "str", "", "The KMS key of `sse = \"aws:kms\"`; empty: "
                "`aws/s3`."),
    ], doc="The `s3` storage (the default storage of the AWS backends).")
