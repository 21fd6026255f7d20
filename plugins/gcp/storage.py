"""Storage on Google Cloud Storage, for clients and workers alike.

Only the bucket, the key prefix and the project travel in the spec; credentials come from
Google's default chain on each side. With ``STORAGE_EMULATOR_HOST`` set the client talks to
that emulator, anonymously. A GCS object write is atomic — an upload becomes visible only
when it is complete — which is what the layout's "status last" commit rule needs; a missing
object is :class:`StorageKeyError` ("not yet").

The ``[gcs]`` configuration table::

    [gcs]
    bucket = "my-bucket"      # required; it must exist
    prefix = "wrencore"       # every key lives under it
    project = "my-project"    # default: the default credentials' project
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Mapping, Optional

from wrencore_runtime.errors import StorageError, StorageKeyError
from wrencore_runtime.storage import Storage

DEFAULT_PREFIX = "wrencore"
#: HTTP statuses worth repeating a request for (besides lost connections).
_TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}


def _storage_error(operation: str, resource: str, exc: BaseException) -> StorageError:
    """A :class:`StorageError` naming the GCS operation, the resource and the error."""
    code = getattr(exc, "code", None)
    transient = code in _TRANSIENT_STATUSES or isinstance(exc, (ConnectionError, TimeoutError))
    reason = f"{code} {type(exc).__name__}: {exc}" if code else f"{type(exc).__name__}: {exc}"
    return StorageError(f"{operation} on {resource} failed: {reason}", transient=transient)


class GCSStorage(Storage):
    """Objects under ``gs://bucket/prefix``.

    Args:
        bucket: the bucket name (it must exist).
        prefix: a key prefix; every key of this storage lives under it.
        project: the Google Cloud project (None: from the default credentials).
    """

    def __init__(self, bucket: str, prefix: str = "", project: Optional[str] = None) -> None:
        if not bucket or not isinstance(bucket, str):
            raise ValueError("GCS storage needs a bucket name (config [gcs] bucket = \"...\")")
        self.bucket_name = bucket
        self.prefix = (prefix.strip("/") + "/") if prefix and prefix.strip("/") else ""
        self.project = project or None
        self.config: Dict[str, Any] = {"bucket": bucket, "prefix": self.prefix}
        if self.project:
            self.config["project"] = self.project
        self._bucket: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<GCSStorage gs://{self.bucket_name}/{self.prefix}>"

    @property
    def bucket(self) -> Any:
        with self._lock:
            if self._bucket is None:
                from google.cloud import storage

                if os.environ.get("STORAGE_EMULATOR_HOST"):
                    from google.auth.credentials import AnonymousCredentials

                    client = storage.Client(project=self.project or "wrencore-emulator",
                                            credentials=AnonymousCredentials())
                else:
                    client = storage.Client(project=self.project)
                self._bucket = client.bucket(self.bucket_name)
            return self._bucket

    def _blob(self, key: str) -> Any:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return self.bucket.blob(self.prefix + key)

    def location(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}{key}"

    # -- Storage ---------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        try:
            blob.upload_from_string(bytes(data), content_type="application/octet-stream")
        except Exception as exc:
            raise _storage_error("upload", self.location(key), exc) from exc

    def get(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound

        blob = self._blob(key)
        try:
            return blob.download_as_bytes()
        except NotFound:
            raise StorageKeyError(key) from None
        except Exception as exc:
            raise _storage_error("download", self.location(key), exc) from exc

    def exists(self, key: str) -> bool:
        blob = self._blob(key)
        try:
            return bool(blob.exists())
        except Exception as exc:
            raise _storage_error("exists", self.location(key), exc) from exc

    def list(self, prefix: str) -> List[str]:
        strip = len(self.prefix)
        try:
            blobs = self.bucket.client.list_blobs(self.bucket_name, prefix=self.prefix + prefix)
            return sorted(blob.name[strip:] for blob in blobs)
        except Exception as exc:
            raise _storage_error("list", f"bucket {self.bucket_name} (prefix "
                                 f"{self.prefix + prefix!r})", exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        from google.api_core.exceptions import NotFound

        keys = self.list(prefix)
        for key in keys:
            try:
                self._blob(key).delete()
            except NotFound:
                pass
            except Exception as exc:
                raise _storage_error("delete", self.location(key), exc) from exc
        return len(keys)


def gcs_storage(section: Mapping[str, Any]) -> GCSStorage:
    """The ``[gcs]`` table's storage. Credentials never go there: Google's chain finds them."""
    from wrencore.errors import ConfigError

    bucket = section.get("bucket")
    if not bucket:
        raise ConfigError(
            "the gcs storage needs a bucket: set [gcs] bucket = \"my-bucket\" in wrencore.toml, "
            "WRENCORE_GCS__BUCKET, or Executor(config={\"gcs\": {\"bucket\": ...}})")
    if "credentials" in section or "service_account_key" in section:
        raise ConfigError("[gcs] takes no credentials: they come from Google's default chain "
                          "(GOOGLE_APPLICATION_CREDENTIALS, the metadata server, gcloud)")
    return GCSStorage(bucket=str(bucket),
                      prefix=str(section.get("prefix", DEFAULT_PREFIX) or ""),
                      project=section.get("project") or None)
