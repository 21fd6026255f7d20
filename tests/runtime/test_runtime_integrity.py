"""Workers check every stored object of a job's runtime before installing any of it: the
manifest against the digest the signed job carries and against the runtime hash, each
wheel against the digest the manifest records."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import pytest

from wrencore.environment import Runtime, Wheel, ensure_stored
from wrencore_runtime import layout
from wrencore_runtime.environment import JobEnvironments, build_environment
from wrencore_runtime.errors import IntegrityError, RuntimeBuildError
from wrencore_runtime.protocol import PYTHON
from wrencore_runtime.storage import LocalFileStorage


def _wheel(path, name, body):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}.py", body)
        archive.writestr(f"{name}-1.0.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return Wheel(name, "1.0", str(path), "downloaded")


@pytest.fixture
def stored(tmp_path):
    """A two-wheel runtime stored as a client stores it."""
    wheels = {name: _wheel(tmp_path / f"{name}-1.0-py3-none-any.whl", name, f"NAME = {name!r}\n")
              for name in ("alpha", "beta")}
    runtime = Runtime(python=PYTHON, platform="any", distributions={"alpha": "1.0", "beta": "1.0"},
                      wheels=wheels)
    storage = LocalFileStorage(str(tmp_path / "storage"))
    assert ensure_stored(storage, runtime)
    assert runtime.job_entry()["manifest_sha256"] == runtime.manifest_sha256
    return storage, runtime


def _build(storage, runtime, root, **kwargs):
    return build_environment(storage, runtime.hash, str(root), layout_kind="layer",
                             manifest_sha256=runtime.manifest_sha256, **kwargs)


def _nothing_built(root):
    return sorted(n for n in os.listdir(root) if n != ".lock") == []


def test_an_untouched_runtime_builds(stored, tmp_path):
    storage, runtime = stored
    env_dir = _build(storage, runtime, tmp_path / "envs")
    assert sorted(os.listdir(os.path.join(env_dir, "python"))) == [
        "alpha-1.0.dist-info", "alpha.py", "beta-1.0.dist-info", "beta.py"]


def test_a_tampered_wheel_is_refused_and_nothing_is_installed(stored, tmp_path):
    storage, runtime = stored
    key = layout.runtime_wheel_key(runtime.hash, "beta-1.0-py3-none-any.whl")
    bad = tmp_path / "bad.whl"
    _wheel(bad, "beta", "import os; os.system('echo owned')\n")
    storage.put(key, bad.read_bytes())
    root = tmp_path / "envs"
    with pytest.raises(IntegrityError, match="beta-1.0-py3-none-any.whl does not have the "
                                             "SHA-256 its runtime's manifest records"):
        _build(storage, runtime, root)
    assert _nothing_built(root)  # not even alpha, checked and unpacked first in order


def test_a_manifest_rewritten_to_match_a_tampered_wheel_is_refused(stored, tmp_path):
    storage, runtime = stored
    bad = tmp_path / "bad.whl"
    _wheel(bad, "beta", "import os\n")
    storage.put(layout.runtime_wheel_key(runtime.hash, "beta-1.0-py3-none-any.whl"),
                bad.read_bytes())
    manifest_key = layout.runtime_manifest_key(runtime.hash)
    manifest = json.loads(storage.get(manifest_key))
    manifest["wheels"][1]["sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()
    storage.put(manifest_key, json.dumps(manifest).encode())
    root = tmp_path / "envs"
    with pytest.raises(IntegrityError, match="runtime.json does not have the SHA-256 the "
                                             "signed job carries"):
        _build(storage, runtime, root)
    # Without the job's digest (a job from an older client), the wheel is still bound to
    # the runtime hash only through the manifest: changing what it names is refused.
    manifest["distributions"]["beta"] = "2.0"
    storage.put(manifest_key, json.dumps(manifest).encode())
    with pytest.raises(IntegrityError, match="describes runtime"):
        build_environment(storage, runtime.hash, str(root), layout_kind="layer")
    assert _nothing_built(root)


def test_a_worker_fails_the_job_with_a_runtime_build_error_naming_the_wheel(stored, tmp_path):
    storage, runtime = stored
    storage.put(layout.runtime_wheel_key(runtime.hash, "alpha-1.0-py3-none-any.whl"), b"PK")
    environments = JobEnvironments(str(tmp_path / "envs"), worker_id="w-1")
    job = {"job_id": "j", "storage": storage.to_spec(), "runtime": runtime.job_entry()}
    with pytest.raises(RuntimeBuildError) as info:
        environments.runner_for(job)
    message = str(info.value)
    assert "worker w-1 could not build the environment" in message
    assert "IntegrityError" in message and "alpha-1.0-py3-none-any.whl" in message
    assert "nothing of runtime" in message and "wrencore runtime delete" in message
    assert _nothing_built(tmp_path / "envs") and environments.processes == {}
