"""Storage that fails for good under a job: the watcher gives its verdicts anyway and ends
every future with an error naming the failing operation and resource, in bounded time."""

from __future__ import annotations

import time
import uuid

import boto3
import pytest

import wrencore
from wrencore.errors import StorageError
from wrencore.futures import Future
from wrencore.watcher import StatusWatcher
from wrencore_aws.s3 import S3Storage
from tests.servers import procs

from . import workload


def test_deadline_verdicts_are_given_while_listing_fails_and_the_rest_end_in_bounded_time(
        aws_env):
    storage = S3Storage(bucket=f"gone-{uuid.uuid4().hex[:8]}", prefix="jobs")  # never created
    futures = {c: Future("j", c) for c in ("00000", "00001")}
    lost = RuntimeError("call 00000 is lost")
    watcher = StatusWatcher(storage, min_interval=0.05, max_interval=0.2, give_up_after=2.0,
                            permanent_attempts=1000,
                            deadline_check=lambda f: lost if f.call_id == "00000" else None)
    start = time.monotonic()
    watcher.watch("j", futures)
    try:
        with pytest.raises(RuntimeError, match="is lost"):
            futures["00000"].result(timeout=10)
        assert time.monotonic() - start < 1.5  # not held up by the failing listing
        with pytest.raises(StorageError, match=f"ListObjectsV2 on bucket {storage.bucket} "
                                               r"\(prefix 'jobs/j/'\) failed: NoSuchBucket"):
            futures["00001"].result(timeout=10)
        assert 2.0 <= time.monotonic() - start < 6
        assert watcher.pending_count() == 0
    finally:
        watcher.stop()


def test_storage_errors_name_operation_resource_and_code(aws_env):
    storage = S3Storage(bucket=f"gone-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StorageError, match=f"PutObject on s3://{storage.bucket}/k failed: "
                                           "NoSuchBucket") as info:
        storage.put("k", b"x")
    assert info.value.transient is False


def test_endpoint_restarted_with_its_state_lost_ends_the_job_with_a_storage_error(
        own_moto, tmp_path):
    s3, ec2 = boto3.client("s3"), boto3.client("ec2")
    bucket, fleet = f"b-{uuid.uuid4().hex[:8]}", f"f{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    config = {
        "aws_sqs_ec2": {"queue_name": f"q-{fleet}", "fleet": fleet,
                        "ami": ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"],
                        "min_instances": 1, "max_instances": 1, "visibility_timeout": 2,
                        "poll_wait": 1, "dead_letter_check_interval": 0.5},
        "s3": {"bucket": bucket, "prefix": "jobs"},
        "storage_retry_for": 10,
    }
    from tests.servers.fleet_harness import FleetHarness

    harness = FleetHarness(dict(own_moto.env(), WRENCORE_DAEMON__LOG_SEND_INTERVAL="1"),
                           fleet, numprocs=1).__enter__()
    try:
        executor = wrencore.Executor(backend="aws_sqs_ec2", config=config)
        futures = executor.map_futures(workload.record_run,
                                       [{"dir": str(tmp_path), "x": x, "hold": 30}
                                        for x in range(3)])
        ends = []
        for f in futures:
            f.add_done_callback(ends.append)
        procs.wait_until(lambda: list(tmp_path.glob("run-*")), 60, "a call to start")
        own_moto.restart()  # same port, nothing in it: bucket, queue and fleet are gone
        start = time.monotonic()
        for future in futures:
            with pytest.raises(StorageError, match=f"ListObjectsV2 on bucket {bucket}"):
                future.result(timeout=30)
        assert time.monotonic() - start < 15
        executor.shutdown(wait=True)
        assert time.monotonic() - start < 20
        assert sorted(f.call_id for f in ends) == [f.call_id for f in futures]
    finally:
        harness.stop()
    assert all(not i.processes() for i in harness.instances.values())
