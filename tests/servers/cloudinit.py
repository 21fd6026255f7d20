"""cloud-init's own schema check, from Debian's package, without installing it as a service.

The package is downloaded with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into
``~/.cache/wrencore-tests/cloud-init`` once; its ``cloud-init schema`` then runs on this
Python with the test extra's PyYAML, jsonschema, jinja2, configobj, jsonpatch, requests and
oauthlib.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

CACHE = os.path.join(os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")),
                     "wrencore-tests", "cloud-init")


@dataclass
class SchemaResult:
    valid: bool
    output: str


def _download(target: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # apt's sandbox user writes the file
        command = ["apt-get", "download", "cloud-init"]
        result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
            subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=True)
        (deb,) = glob.glob(os.path.join(tmp, "cloud-init_*.deb"))
        staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".unpack-")
        subprocess.run(["dpkg-deb", "-x", deb, staging], check=True)
        try:
            os.rename(staging, target)
        except OSError:  # a parallel run unpacked it first
            shutil.rmtree(staging, ignore_errors=True)


def cloud_init_root() -> str:
    """The unpacked package (downloaded on first use)."""
    target = os.path.join(CACHE, "root")
    if not os.path.isfile(os.path.join(target, "usr", "bin", "cloud-init")):
        os.makedirs(CACHE, exist_ok=True)
        _download(target)
    return target


def check_schema(user_data: str) -> SchemaResult:
    """Run ``cloud-init schema --config-file`` on ``user_data``."""
    root = cloud_init_root()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(user_data)
        path = f.name
    try:
        env = dict(os.environ, PYTHONPATH=os.path.join(root, "usr", "lib", "python3",
                                                       "dist-packages"))
        result = subprocess.run(
            [sys.executable, os.path.join(root, "usr", "bin", "cloud-init"), "schema",
             "--config-file", path],
            capture_output=True, text=True, env=env, timeout=120)
    finally:
        os.unlink(path)
    return SchemaResult(result.returncode == 0, result.stdout + result.stderr)
