"""Building the Lambda deployment package from the project's runtime.

The zip holds ``wrencore_runtime`` (the job runner every worker shares), the worker half of
the AWS plugins (:data:`WORKER_MODULES`: this package's handler, S3 storage and the SQS queue
— their client halves stay out, since they import the client library), and the pure-Python
dependencies AWS's Python runtime lacks, copied from this client's own installation so the
worker unpickles with exactly the client's versions (cloudpickle). boto3 is not packaged:
the Lambda runtime has it. The zip is deterministic (sorted entries, fixed timestamps), so
its SHA-256 names the runtime: the same code always gives the same hash and function name.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import sys
import zipfile
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

HANDLER = "wrencore_aws_lambda.handler.handler"
#: The worker-side modules of the AWS plugins that the handler imports, with their packages'
#: ``__init__`` (which import nothing).
WORKER_MODULES = ("wrencore_aws_lambda.handler", "wrencore_aws.s3", "wrencore_aws.sqs",
                  "wrencore_aws.ssm")
#: Packages shipped with the runtime: AWS's Python runtime has the standard library and boto3.
SHIPPED_DEPENDENCIES = ("cloudpickle",)
_SKIP_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache"}


@dataclass(frozen=True)
class RuntimePackage:
    zip_bytes: bytes
    #: Hex SHA-256 of the zip; the runtime's identity.
    sha256: str
    #: ``python3.11``: the Lambda runtime matching this client's Python.
    lambda_runtime: str
    handler: str = HANDLER

    @property
    def short_hash(self) -> str:
        return self.sha256[:16]


def lambda_runtime_name() -> str:
    return f"python{sys.version_info[0]}.{sys.version_info[1]}"


def _package_dir(name: str) -> str:
    module = importlib.import_module(name)
    return os.path.dirname(os.path.abspath(module.__file__))


def _walk(root: str, arc_root: str) -> Iterator[Tuple[str, str]]:
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            yield full, f"{arc_root}/{rel}"


def package_files(runtime_path: Optional[str] = None) -> Dict[str, str]:
    """``{name in the zip: file on disk}`` for the runtime and its shipped dependencies."""
    files: Dict[str, str] = {}
    for full, arcname in _walk(runtime_path or _package_dir("wrencore_runtime"),
                               "wrencore_runtime"):
        files[arcname] = full
    for name in WORKER_MODULES:
        package, module = name.rsplit(".", 1)
        directory = _package_dir(package)
        for filename in ("__init__.py", f"{module}.py"):
            files[f"{package}/{filename}"] = os.path.join(directory, filename)
    for dependency in SHIPPED_DEPENDENCIES:
        for full, arcname in _walk(_package_dir(dependency), dependency):
            files[arcname] = full
    return files


def build_package(runtime_path: Optional[str] = None) -> RuntimePackage:
    """Build the deployment zip (deterministically) from ``runtime_path`` or the installed runtime."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, full in sorted(package_files(runtime_path).items()):
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(full, "rb") as f:
                archive.writestr(info, f.read())
    data = buffer.getvalue()
    return RuntimePackage(data, hashlib.sha256(data).hexdigest(), lambda_runtime_name())
