"""Job runtimes on the fleet harness: instances boot from the daemon runtime the client
stored and build one environment per job runtime from the stored wheels."""

from __future__ import annotations

import os

import boto3
import pytest

import wrencore
from wrencore.environment import RuntimeBuildError, job_runtime

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
