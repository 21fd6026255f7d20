"""Job runtimes on the fleet harness: instances boot from the daemon runtime the client
stored and build one environment per job runtime from the stored wheels."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import time

import boto3
import pytest

import wrencore
from wrencore.environment import RuntimeBuildError, job_runtime
from wrencore.errors import RuntimeMismatchError

from tests import runtime_workload as work


def _runtime_keys(bucket):
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="jobs/runtimes/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_jobs_with_their_own_runtimes_share_one_instance(standalone_config, fleet, bucket):
    harness = fleet(numprocs=1)
    config = standalone_config()
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        body = executor.submit(work.yaml_and_msgpack, "a: [1, 2]")
        installed = executor.submit(work.toolz_version)
        assert body.result(timeout=120) == {"a": [1, 2]}
        named = job_runtime(work.toolz_version, "auto", None, executor.storage, executor.backend)
    assert installed.result(timeout=60) == named.distributions["toolz"]
    with wrencore.Executor(backend="aws_sqs_ec2", config=config,
                           requirements=["toolz==0.12.1", "tabulate==0.9.0"]) as executor:
        other = executor.submit(work.toolz_version)
        missing_here = executor.submit(work.tabulate_version)
        assert (other.result(timeout=120), missing_here.result(timeout=60)) == ("0.12.1", "0.9.0")
    stored = _runtime_keys(bucket)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config,
                           runtime=f"sha256:{named.hash}") as executor:
        again = executor.submit(work.toolz_version)
        assert again.result(timeout=60) == named.distributions["toolz"]
    assert _runtime_keys(bucket) == stored  # the named runtime was neither rebuilt nor stored

    (instance,) = harness.instances.values()
    workers = {f.metadata["worker_id"].rsplit("-wrencore-daemon-", 1)[0]
               for f in (body, installed, other, missing_here, again)}
    assert workers == {instance.id}
    # The daemon's own environment has neither PyYAML nor toolz: each job had its own.
    daemon_site = os.path.join(instance.root, "venv", "lib", "python3.11", "site-packages")
    assert os.path.isdir(os.path.join(daemon_site, "wrencore_runtime"))
    assert not os.path.exists(os.path.join(daemon_site, "yaml"))
    assert not os.path.exists(os.path.join(daemon_site, "toolz"))
    environments = os.listdir(os.path.join(instance.root, "state", "envs"))
    assert len([e for e in environments if not e.startswith(".")]) == 3


def test_distribution_without_a_wheel_is_a_clear_error(standalone_config, bucket):
    with wrencore.Executor(backend="aws_sqs_ec2", config=standalone_config(),
                           requirements=["docopt==0.6.2"]) as executor:
        with pytest.raises(RuntimeBuildError, match="no wheel of docopt==0.6.2"):
            executor.submit(work.plain, 1)
    assert boto3.client("ec2").describe_instances()["Reservations"] == []


def _environment_processes(instance):
    """The pids of the instance's processes that run calls in a job runtime's environment."""
    found = []
    for pid in instance.processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"wrencore_runtime.environment" in argv and b"serve" in argv:
            found.append(pid)
    return found


def test_environment_that_differs_from_the_runtime_is_refused_before_any_call(
        standalone_config, fleet, tmp_path):
    harness = fleet(numprocs=1)
    config = standalone_config()
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        version = executor.submit(work.toolz_version).result(timeout=120)
        runtime = executor._submit_jobs[id(work.toolz_version)][1]["runtime"]
    (instance,) = harness.instances.values()
    # Someone installs another toolz into the instance's cached environment of the runtime,
    # and its environment process is replaced (as after a daemon restart).
    (info,) = glob.glob(os.path.join(instance.root, "state", "envs", runtime["hash"], "lib",
                                     "python*", "site-packages", "toolz-*.dist-info"))
    forged = os.path.join(os.path.dirname(info), "toolz-0.0.1.dist-info")
    shutil.move(info, forged)
    with open(os.path.join(forged, "METADATA")) as f:
        text = f.read()
    with open(os.path.join(forged, "METADATA"), "w") as f:
        f.write(text.replace(f"Version: {version}", "Version: 0.0.1"))
    processes = _environment_processes(instance)
    assert processes
    for pid in processes:
        os.kill(pid, signal.SIGKILL)

    markers = [tmp_path / f"ran-{i}" for i in range(3)]
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        assert job_runtime(work.touch_with_toolz, "auto", None, executor.storage,
                           executor.backend).hash == runtime["hash"]
        futures = executor.map_futures(work.touch_with_toolz, [str(m) for m in markers])
        for future in futures:
            with pytest.raises(RuntimeMismatchError, match=rf"toolz=={version} in the job's "
                                                           rf"runtime but 0\.0\.1 on the worker"):
                future.result(timeout=60)
    assert not any(m.exists() for m in markers)  # refused before the function ran


def test_runtime_missing_from_storage_fails_the_calls_at_once_saying_what_to_do(
        standalone_config, fleet, bucket):
    harness = fleet(numprocs=1)
    config = standalone_config(max_receives=3, visibility_timeout=2)
    s3 = boto3.client("s3")
    with wrencore.Executor(backend="aws_sqs_ec2", config=config,
                           requirements=["toolz==0.12.1"]) as executor:
        runtime = job_runtime(work.toolz_version, "auto", ["toolz==0.12.1"], executor.storage,
                              executor.backend)
        # Deleted behind this process's back: it still takes the runtime for stored.
        for key in _runtime_keys(bucket):
            if key.startswith(f"jobs/runtimes/{runtime.hash}/"):
                s3.delete_object(Bucket=bucket, Key=key)
        futures = executor.map_futures(work.toolz_version, range(3), chunksize=2)
        harness.wait_for_instances(1)
        harness.wait_for_daemons(1, timeout=120)
        start = time.monotonic()
        for future in futures:
            with pytest.raises(RuntimeBuildError) as info:
                future.result(timeout=60)
            message = str(info.value)
            assert f"environment of the job's runtime {runtime.hash[:16]}" in message
            assert f"runtimes/{runtime.hash}/runtime.json is missing from storage" in message
            assert "Submit the job again from a new Python process" in message
        # At the first receive: not after the messages' receives ran out (dead letters).
        assert time.monotonic() - start < 10
        depth = executor.backend.standalone.queue_size()
    assert depth == {"visible": 0, "in_flight": 0, "dead": 0}
