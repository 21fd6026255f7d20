"""A job's runtime as a Lambda layer: its wheels, unpacked into the layer's ``python/``.

The layer is built only from what the client stored for the runtime (the same wheels an
EC2 instance or a local isolated worker installs), named after the runtime's hash
(``wrencore-py311-{hash16}``) and published once: a later job with the same runtime finds
it with ``ListLayerVersions``. Lambda's limits are checked first: a runtime that does not fit
in 250 MB unzipped beside the function package fails with :class:`RuntimeTooLargeError`,
which lists each distribution's size. A layer zip over 50 MB is uploaded through S3.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from typing import Any, Dict, List

from wrencore.environment import RuntimeBuildError, cache_dir
from wrencore_runtime import layout
from wrencore_runtime.environment import build_environment, load_manifest
from wrencore_aws.s3 import S3Storage

logger = logging.getLogger(__name__)

#: Lambda's limits: function and layers unzipped, and a zip uploaded directly.
UNZIPPED_LIMIT = 250 * 1024 * 1024
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024


class RuntimeTooLargeError(RuntimeBuildError):
    """The runtime does not fit Lambda's limits; the message lists the sizes."""


def layer_name(runtime: Dict[str, Any]) -> str:
    return f"wrencore-py{runtime['python'].replace('.', '')}-{runtime['hash'][:16]}"


def check_size(manifest: Dict[str, Any], package_size: int, limit: int = UNZIPPED_LIMIT) -> None:
    """Refuse a runtime that, with the function package, exceeds Lambda's unzipped limit."""
    wheels = sorted(manifest["wheels"], key=lambda w: -w["unpacked_size"])
    total = package_size + sum(w["unpacked_size"] for w in wheels)
    if total <= limit:
        return
    lines = [f"  {w['name']}=={w['version']}: {w['unpacked_size'] / 1e6:.1f} MB" for w in wheels]
    lines.append(f"  (the wrencore function package: {package_size / 1e6:.1f} MB)")
    raise RuntimeTooLargeError(
        f"runtime {manifest['hash'][:16]} is {total / 1e6:.1f} MB unzipped, over AWS Lambda's "
        f"limit of {limit / 1e6:.0f} MB for a function and its layers:\n" + "\n".join(lines)
        + "\nUse the aws_sqs_ec2 backend, whose instances have no such limit, or trim the "
          "runtime (requirements=..., runtime=\"explicit\").")


def _zip_dir(root: str, prefix: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(dirpath, name)
                arcname = prefix + os.path.relpath(full, root).replace(os.sep, "/")
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (os.stat(full).st_mode & 0o777) << 16
                with open(full, "rb") as f:
                    archive.writestr(info, f.read())
    return buffer.getvalue()


def ensure_layer(client: Any, storage: S3Storage, runtime: Dict[str, Any],
                 lambda_runtime: str, package_size: int,
                 limit: int = UNZIPPED_LIMIT) -> List[str]:
    """The ARNs of the layers that deliver ``runtime`` (published if missing)."""
    name = layer_name(runtime)
    versions = client.list_layer_versions(LayerName=name).get("LayerVersions") or []
    for version in versions:
        if runtime["hash"] in (version.get("Description") or ""):
            return [version["LayerVersionArn"]]
    manifest = load_manifest(storage, runtime["hash"])
    check_size(manifest, package_size, limit)
    root = build_environment(storage, runtime["hash"], cache_dir("lambda-layers"),
                             layout_kind="layer",
                             manifest_sha256=runtime.get("manifest_sha256"))
    data = _zip_dir(os.path.join(root, "python"), "python/")
    if len(data) > DIRECT_UPLOAD_LIMIT:
        key = layout.runtime_prefix(runtime["hash"]) + "lambda-layer.zip"
        storage.put(key, data)
        content = {"S3Bucket": storage.bucket, "S3Key": storage._full_key(key)}
    else:
        content = {"ZipFile": data}
    arn = client.publish_layer_version(
        LayerName=name, Content=content, CompatibleRuntimes=[lambda_runtime],
        Description=f"wrencore runtime {runtime['hash']}")["LayerVersionArn"]
    logger.info("published layer %s (%.1f MB zipped)", arn, len(data) / 1e6)
    return [arn]
