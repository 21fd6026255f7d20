"""Storage on Amazon S3 (or anything speaking its API), shared by every AWS backend.

Only the bucket, the key prefix and, optionally, an endpoint travel in the spec: credentials
and region come from boto3's normal chain on each side (profile, environment, instance or
Lambda role), and ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` are honoured by boto3
itself. Small objects move in a single request; large ones as multipart uploads and
concurrent ranged downloads. S3 writes are atomic per object, which is what the layout's
"status last" commit rule needs.

boto3 is imported when the first client is made, so importing this module is cheap.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import Any, Dict, List, Optional

from wrencore_runtime.errors import StorageError, StorageKeyError
from wrencore_runtime.storage import Storage

logger = logging.getLogger(__name__)

#: Objects up to this size are read and written with one request.
SINGLE_REQUEST_LIMIT = 8 * 1024 * 1024
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
#: Error codes worth repeating a request for (with 5xx and connection failures).
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout",
    "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "OperationAborted",
}


def _storage_error(operation: str, resource: str, exc: BaseException) -> StorageError:
    """A :class:`StorageError` that names the S3 operation, the resource and the error."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    transient = (isinstance(exc, (BotoConnectionError, HTTPClientError))
                 or code in _TRANSIENT_CODES or status == 429 or status >= 500)
    reason = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
    return StorageError(f"{operation} on {resource} failed: {reason}", transient=transient)


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix``.

    Args:
        bucket: the bucket name (it must exist).
        prefix: a key prefix; every key of this storage lives under it.
        endpoint_url: an S3-compatible endpoint (None: boto3's default or ``AWS_ENDPOINT_URL``).
        region: the bucket's region (None: boto3's default chain).
        max_connections: the HTTP connection pool size (threads sharing this storage).
        sse: server-side encryption of every object written: ``"AES256"`` (SSE-S3, the
            default), ``"aws:kms"`` (SSE-KMS, with ``sse_kms_key_id`` or the account's
            ``aws/s3`` key), or ``""`` to leave it to the bucket's default encryption.
        sse_kms_key_id: the KMS key of SSE-KMS.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: Optional[str] = None,
                 region: Optional[str] = None, max_connections: int = 64,
                 sse: str = "AES256", sse_kms_key_id: str = ""):
        if sse not in ("", "AES256", "aws:kms"):
            raise ValueError(f"S3 server-side encryption {sse!r} is not one of 'AES256' "
                             f"(SSE-S3), 'aws:kms' (SSE-KMS) or '' (the bucket's default)")
        if sse_kms_key_id and sse != "aws:kms":
            raise ValueError("sse_kms_key_id needs sse = 'aws:kms'")
        if not bucket or not isinstance(bucket, str):
            raise ValueError("S3 storage needs a bucket name (config [s3] bucket = \"...\")")
        self.bucket = bucket
        self.prefix = (prefix.strip("/") + "/") if prefix and prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.max_connections = int(max_connections)
        self.config: Dict[str, Any] = {"bucket": bucket, "prefix": self.prefix}
        if self.endpoint_url:
            self.config["endpoint_url"] = self.endpoint_url
        if self.region:
            self.config["region"] = self.region
        self.sse, self.sse_kms_key_id = sse, sse_kms_key_id
        self.config["sse"] = sse
        if sse_kms_key_id:
            self.config["sse_kms_key_id"] = sse_kms_key_id
        #: What every write asks S3 for (the spec carries it, so workers write alike).
        self._sse_args: Dict[str, str] = {"ServerSideEncryption": sse} if sse else {}
        if sse_kms_key_id:
            self._sse_args["SSEKMSKeyId"] = sse_kms_key_id
        self._client: Any = None
        self._transfer_config: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<S3Storage s3://{self.bucket}/{self.prefix}>"

    # -- connection ------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from boto3.s3.transfer import TransferConfig
                    from botocore.config import Config

                    session = boto3.session.Session()
                    self._client = session.client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                        config=Config(max_pool_connections=self.max_connections,
                                      retries={"mode": "standard", "max_attempts": 5}),
                    )
                    self._transfer_config = TransferConfig(
                        multipart_threshold=SINGLE_REQUEST_LIMIT,
                        multipart_chunksize=SINGLE_REQUEST_LIMIT, max_concurrency=8,
                    )
        return self._client

    def _full_key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self.prefix + key

    @staticmethod
    def _is_missing(exc: BaseException) -> bool:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in _MISSING_CODES or status == 404

    # -- Storage ---------------------------------------------------------------------
    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def put(self, key: str, data: bytes) -> None:
        client, full_key = self.client, self._full_key(key)
        try:
            if len(data) <= SINGLE_REQUEST_LIMIT:
                client.put_object(Bucket=self.bucket, Key=full_key, Body=bytes(data),
                                  **self._sse_args)
            else:
                client.upload_fileobj(io.BytesIO(data), self.bucket, full_key,
                                      ExtraArgs=dict(self._sse_args) or None,
                                      Config=self._transfer_config)
        except Exception as exc:
            raise _storage_error("PutObject", self.location(key), exc) from exc

    def get(self, key: str) -> bytes:
        try:
            return self._get(key)
        except (StorageKeyError, StorageError):
            raise
        except Exception as exc:
            raise _storage_error("GetObject", self.location(key), exc) from exc

    def _get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        client, full_key = self.client, self._full_key(key)
        try:
            # One request for small objects; its Content-Range tells whether more remains.
            response = client.get_object(Bucket=self.bucket, Key=full_key,
                                         Range=f"bytes=0-{SINGLE_REQUEST_LIMIT - 1}")
        except ClientError as exc:
            if self._is_missing(exc):
                raise StorageKeyError(key) from None
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            return b""  # an empty object has no byte 0
        head = response["Body"].read()
        total = _total_size(response.get("ContentRange"), len(head))
        if total <= len(head):
            return head
        buffer = io.BytesIO()
        try:
            client.download_fileobj(self.bucket, full_key, buffer, Config=self._transfer_config)
        except ClientError as exc:
            if self._is_missing(exc):
                raise StorageKeyError(key) from None
            raise
        return buffer.getvalue()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full_key(key))
        except ClientError as exc:
            if self._is_missing(exc):
                return False
            raise _storage_error("HeadObject", self.location(key), exc) from exc
        except Exception as exc:
            raise _storage_error("HeadObject", self.location(key), exc) from exc
        return True

    def list(self, prefix: str) -> List[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        keys: List[str] = []
        strip = len(self.prefix)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", ()))
        except Exception as exc:
            raise _storage_error("ListObjectsV2", f"bucket {self.bucket} (prefix "
                                 f"{self.prefix + prefix!r})", exc) from exc
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.prefix + k} for k in batch], "Quiet": True},
                )
            except Exception as exc:
                raise _storage_error("DeleteObjects", f"bucket {self.bucket}", exc) from exc
            for error in response.get("Errors", ()):
                logger.warning("could not delete s3://%s/%s: %s", self.bucket, error.get("Key"),
                               error.get("Message"))
        return len(keys)


def _total_size(content_range: Optional[str], received: int) -> int:
    """The object size from ``Content-Range: bytes 0-99/1234`` (or what was received)."""
    if content_range and "/" in content_range:
        total = content_range.rpartition("/")[2]
        if total.isdigit():
            return int(total)
    return received
