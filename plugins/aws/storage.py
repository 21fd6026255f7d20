"""Building the S3 storage from the ``[s3]`` configuration table."""

from __future__ import annotations

from typing import Any, Mapping

from wrencore.errors import ConfigError
from wrencore_aws.s3 import S3Storage

DEFAULT_PREFIX = "wrencore"


def s3_storage(section: Mapping[str, Any]) -> S3Storage:
    """``[s3]``: ``bucket`` (required), ``prefix`` (default ``wrencore``), ``endpoint_url``,
    ``region``, ``sse`` (server-side encryption of job data at rest: ``"AES256"`` — SSE-S3,
    the default —, ``"aws:kms"`` — SSE-KMS with ``sse_kms_key_id`` or ``aws/s3`` —, or ``""``
    for the bucket's default). Credentials never go here: boto3 finds them (profile, env,
    instance role)."""
    bucket = section.get("bucket")
    if not bucket:
        raise ConfigError(
            "the s3 storage needs a bucket: set [s3] bucket = \"my-bucket\" in wrencore.toml, "
            "WRENCORE_S3__BUCKET, or Executor(config={\"s3\": {\"bucket\": ...}})"
        )
    for forbidden in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        if forbidden in section:
            raise ConfigError(
                f"[s3] {forbidden} is not accepted: credentials come from boto3's own chain "
                f"(AWS_PROFILE, environment variables, instance or Lambda role)"
            )
    return S3Storage(
        bucket=str(bucket),
        prefix=str(section.get("prefix", DEFAULT_PREFIX) or ""),
        endpoint_url=section.get("endpoint_url") or None,
        region=section.get("region") or None,
        sse=str(section.get("sse", "AES256") or ""),
        sse_kms_key_id=str(section.get("sse_kms_key_id", "") or ""),
    )
