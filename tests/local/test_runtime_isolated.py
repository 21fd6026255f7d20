"""``runtime="isolated"``: local workers in an environment built only from the stored runtime."""

from __future__ import annotations

import glob
import os
import shutil

import pytest

import wrencore
from wrencore.environment import RuntimeBuildError, job_runtime, resolver
from wrencore.errors import RuntimeMismatchError
from wrencore_runtime import layout

from tests import runtime_workload as work


@pytest.fixture
def env_dir(tmp_path):
    return str(tmp_path / "envs")


def _executor(env_dir, **kwargs):
    return wrencore.Executor(backend="local", config={"local": {"workers": 1, "env_dir": env_dir}},
                             **kwargs)


def test_import_in_the_body_is_detected_and_nothing_else_is_there(env_dir):
    with _executor(env_dir, runtime="isolated") as executor:
        assert executor.submit(work.yaml_and_msgpack, "a: [1]").result(timeout=60) == {"a": [1]}
        python = executor.submit(work.touch, os.devnull).result(timeout=60)
        with pytest.raises(ModuleNotFoundError, match="moto"):
            executor.submit(work.import_dynamically, "moto").result(timeout=60)
    assert python.startswith(env_dir)


def test_default_local_shares_this_interpreter_and_stores_no_runtime(tmp_path):
    with wrencore.Executor(backend="local", config={"local": {"workers": 1}}) as executor:
        assert executor.submit(work.import_dynamically, "moto").result(timeout=60) == "moto"
        job_ids = list(executor._job_ids)
    root = os.environ["WRENCORE_LOCALFS__ROOT"]
    assert not os.path.exists(os.path.join(root, layout.RUNTIMES))
    assert job_ids


def test_explicit_requirement_not_installed_here_works(env_dir):
    with _executor(env_dir, runtime="isolated", requirements=["tabulate==0.9.0"]) as executor:
        assert executor.submit(work.tabulate_version).result(timeout=60) == "0.9.0"


def test_requirements_file_replaces_the_detected_set(env_dir, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# pinned\ntoolz==0.12.1\n")
    with _executor(env_dir, runtime="explicit", requirements=str(requirements)) as executor:
        assert executor.submit(work.toolz_version).result(timeout=60) == "0.12.1"
        with pytest.raises(ModuleNotFoundError, match="yaml"):
            executor.submit(work.imports_yaml).result(timeout=60)


def test_named_runtime_is_reused_without_rebuilding(env_dir):
    with _executor(env_dir, runtime="isolated") as executor:
        runtime = job_runtime(work.toolz_version, "auto", None, executor.storage, executor.backend)
        stored = executor.storage.list(layout.RUNTIMES)
    with _executor(env_dir, runtime=f"sha256:{runtime.hash[:20]}") as executor:
        assert executor.submit(work.toolz_version).result(timeout=60) == \
            runtime.distributions["toolz"]
        assert executor.storage.list(layout.RUNTIMES) == stored
    assert sorted(os.listdir(env_dir)) == sorted([".lock", runtime.hash])


def test_environment_that_differs_from_the_runtime_is_refused_before_the_call(env_dir, tmp_path):
    with _executor(env_dir, runtime="isolated") as executor:
        assert executor.submit(work.toolz_version).result(timeout=60)
        runtime = executor._submit_jobs[id(work.toolz_version)][1]["runtime"]
    # Someone installs another toolz into the cached environment.
    (info,) = glob.glob(os.path.join(env_dir, runtime["hash"], "lib", "python*",
                                     "site-packages", "toolz-*.dist-info"))
    shutil.move(info, os.path.join(os.path.dirname(info), "toolz-0.0.1.dist-info"))
    metadata_file = os.path.join(os.path.dirname(info), "toolz-0.0.1.dist-info", "METADATA")
    with open(metadata_file) as f:
        text = f.read()
    with open(metadata_file, "w") as f:
        f.write(text.replace(f"Version: {runtime['distributions']['toolz']}", "Version: 0.0.1"))
    marker = tmp_path / "ran"
    with _executor(env_dir, runtime="isolated") as executor:
        with pytest.raises(RuntimeMismatchError, match=r"toolz==\S+ in the job's runtime but 0\.0\.1"):
            executor.submit(work.touch_with_toolz, str(marker)).result(timeout=60)
    assert not marker.exists()


def test_distribution_without_a_wheel_is_a_clear_error(env_dir):
    with _executor(env_dir, runtime="isolated", requirements=["docopt==0.6.2"]) as executor:
        with pytest.raises(RuntimeBuildError, match="no wheel of docopt==0.6.2 for Python"):
            executor.submit(work.plain, 1)


def test_detection_on_a_warm_cache_asks_storage_nothing(env_dir):
    # How fast it is, is the benchmark's to report (bench_runtime.py; target: under 5 ms).
    with _executor(env_dir, runtime="isolated") as executor:
        job_runtime(work.yaml_and_msgpack, "auto", None, executor.storage, executor.backend)
        calls = []
        original = executor.storage.exists, executor.storage.put, executor.storage.get
        executor.storage.exists = lambda *a: calls.append(a) or original[0](*a)
        executor.storage.put = lambda *a: calls.append(a) or original[1](*a)
        executor.storage.get = lambda *a: calls.append(a) or original[2](*a)
        for _ in range(20):
            runtime = job_runtime(work.yaml_and_msgpack, "auto", None, executor.storage,
                                  executor.backend)
    assert calls == []
    assert "pyyaml" in runtime.distributions


def test_detection_explains_why_each_distribution_is_there():
    runtime = resolver().resolve(work.yaml_and_msgpack)
    assert any("yaml: imported in yaml_and_msgpack" in r for r in runtime.reasons["pyyaml"])
    assert runtime.reasons["wrencore"] == ["wrencore worker code"]
    assert "toolz" not in runtime.distributions  # imported only by another function


def test_a_tampered_stored_wheel_fails_the_job_and_installs_nothing(env_dir):
    with _executor(env_dir, runtime="isolated") as executor:
        runtime = job_runtime(work.toolz_version, "auto", None, executor.storage,
                              executor.backend)
        (key,) = [k for k in executor.storage.list(layout.runtime_prefix(runtime.hash))
                  if "/wheels/toolz-" in k]
        executor.storage.put(key, executor.storage.get(key) + b"\0")
        future = executor.submit(work.toolz_version)
        with pytest.raises(RuntimeBuildError, match=r"IntegrityError: .*/toolz-.*\.whl does "
                                                    r"not have the SHA-256"):
            future.result(timeout=60)
    assert not os.path.exists(os.path.join(env_dir, runtime.hash))
