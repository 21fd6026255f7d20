"""The instance bootstrap unpacks the daemon's runtime bundle only once every part checks out."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from wrencore_aws_sqs_ec2 import userdata

WHEEL = b"PK\x03\x04 a wheel's bytes"


def _bundle(path, members):
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _manifest(wheel=WHEEL):
    return json.dumps({"wheels": [{"file": "toolz-1.0-py3-none-any.whl",
                                   "sha256": hashlib.sha256(wheel).hexdigest()}]}).encode()


def _unpack(tmp_path, members, manifest_sha256):
    script = tmp_path / "unpack.py"
    script.write_text(userdata.UNPACK_SCRIPT)
    bundle, target = tmp_path / "bundle.tar", tmp_path / "wheels"
    target.mkdir()
    _bundle(bundle, members)
    done = subprocess.run([sys.executable, str(script), str(bundle), str(target),
                           manifest_sha256], capture_output=True, text=True, timeout=60)
    return done, sorted(os.listdir(target))


def test_a_bundle_matching_the_clients_manifest_is_unpacked(tmp_path):
    manifest = _manifest()
    done, files = _unpack(tmp_path, {"runtime.json": manifest,
                                     "toolz-1.0-py3-none-any.whl": WHEEL},
                          hashlib.sha256(manifest).hexdigest())
    assert done.returncode == 0, done.stderr
    assert files == ["runtime.json", "toolz-1.0-py3-none-any.whl"]
    assert (tmp_path / "wheels" / "toolz-1.0-py3-none-any.whl").read_bytes() == WHEEL


@pytest.mark.parametrize("case", ["wheel swapped", "manifest rewritten to match",
                                  "extra member", "path outside"])
def test_a_tampered_bundle_installs_nothing(tmp_path, case):
    manifest = _manifest()
    expected = hashlib.sha256(manifest).hexdigest()  # what the client's user-data carries
    members = {"runtime.json": manifest, "toolz-1.0-py3-none-any.whl": WHEEL}
    if case == "wheel swapped":
        members["toolz-1.0-py3-none-any.whl"] = b"import os; os.system('evil')"
        message = "does not match the manifest"
    elif case == "manifest rewritten to match":
        evil = b"import os; os.system('evil')"
        members = {"runtime.json": _manifest(evil), "toolz-1.0-py3-none-any.whl": evil}
        message = "not the one the client stored"
    elif case == "extra member":
        members["sitecustomize.py"] = b"import os; os.system('evil')"
        message = "unexpected members"
    else:
        members["../../etc/evil"] = b"evil"
        message = "unexpected members"
    done, files = _unpack(tmp_path, members, expected)
    assert done.returncode != 0
    assert message in done.stderr and "nothing was installed" in done.stderr
    assert files == []
    assert not (tmp_path / "etc").exists()
