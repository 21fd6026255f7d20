"""Queues that fail for good under a fleet job while storage works: the task queue deleted
mid-job ends every pending future with a QueueError naming the operation and the queue; a
deleted completion queue is given up for listing storage, and every call still ends with its
own result. Each future ends once, in bounded time, and no process is left behind."""

from __future__ import annotations

import logging
import time

import boto3
import pytest

import wrencore
from wrencore.errors import QueueError
from tests.servers import procs

from . import workload


def _ends_once(futures):
    ends = []
    for future in futures:
        future.add_done_callback(lambda f: ends.append(f.call_id))
    return ends


def test_task_queue_deleted_mid_job_ends_every_pending_future_with_a_queue_error(
        standalone_config, fleet, tmp_path):
    # One message at a time, so calls 1 and 2 wait in the queue while call 0 runs.
    config = standalone_config(batch_size=1, dead_letter_check_interval=0.5)
    config["storage_retry_for"] = 30
    harness = fleet(numprocs=1)
    executor = wrencore.Executor(backend="aws_sqs_ec2", config=config)
    futures = executor.map_futures(workload.record_run,
                                   [{"dir": str(tmp_path), "x": x, "hold": 60} for x in range(3)])
    ends = _ends_once(futures)
    procs.wait_until(lambda: (tmp_path / "run-0").exists(), 120, "call 0 to start")
    queue = executor.backend.standalone.queue
    boto3.client("sqs").delete_queue(QueueUrl=queue.url)  # its dead-letter queue stays
    start = time.monotonic()
    for future in futures:
        with pytest.raises(QueueError, match=rf"GetQueueAttributes on queue {queue.name} "
                                             r"failed: .*NonExistentQueue.*failed 3 times in a "
                                             r"row") as info:
            future.result(timeout=45)
        assert info.value.transient is False
    # Three failed checks of the queue: each comes with a sweep of the pending calls, which
    # the watcher spaces out to at most every 20 times its own duration (seconds apart on a
    # loaded machine).
    assert time.monotonic() - start < 30
    executor.shutdown(wait=True)
    assert time.monotonic() - start < 35
    assert sorted(ends) == [f.call_id for f in futures]
    assert not (tmp_path / "run-1").exists() and not (tmp_path / "run-2").exists()
    harness.stop()
    assert all(not i.processes() for i in harness.instances.values())


def test_completion_queue_deleted_mid_job_is_given_up_for_listing(standalone_config, fleet,
                                                                  tmp_path, caplog):
    config = standalone_config(batch_size=1)
    harness = fleet(numprocs=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        futures = executor.map_futures(workload.record_run,
                                       [{"dir": str(tmp_path), "x": x, "hold": 2}
                                        for x in range(3)])
        ends = _ends_once(futures)
        procs.wait_until(lambda: (tmp_path / "run-0").exists(), 120, "call 0 to start")
        channel = executor.backend.channel
        with caplog.at_level(logging.WARNING, logger="wrencore.watcher"):
            boto3.client("sqs").delete_queue(QueueUrl=channel.spec()["config"]["url"])
            start = time.monotonic()
            assert [f.result(timeout=30) for f in futures] == [0, 10, 20]
            assert time.monotonic() - start < 20  # three 2 s calls, found by listing
            watcher = executor.backend.watcher
            procs.wait_until(lambda: watcher.channel_failure is not None, 20,
                             "the channel to be given up")
    assert isinstance(watcher.channel_failure, QueueError)
    assert f"ReceiveMessage on queue {channel.name} failed" in str(watcher.channel_failure)
    assert any("storage is listed instead from now on" in r.getMessage() for r in caplog.records)
    assert sorted(ends) == [f.call_id for f in futures]
    harness.stop()
    assert all(not i.processes() for i in harness.instances.values())


def test_an_idle_instance_whose_task_queue_is_gone_releases_itself(standalone_config, fleet,
                                                                   tmp_path):
    # A daemon whose queue is deleted can get no more work: once idle for its idle timeout
    # it terminates its instance, as with an empty queue, instead of retrying for ever.
    config = standalone_config(batch_size=1, idle_timeout=2, min_instances=0)
    harness = fleet(numprocs=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        assert executor.submit(workload.record_run,
                               {"dir": str(tmp_path), "x": 1, "hold": 0}).result(timeout=120) == 10
        queue = executor.backend.standalone.queue
        (instance_id,) = harness.states()
        boto3.client("sqs").delete_queue(QueueUrl=queue.url)
        procs.wait_until(lambda: harness.states()[instance_id] in ("shutting-down",
                                                                   "terminated"),
                         60, "the instance to release itself")
    log = harness.instances[instance_id].log_text()
    assert "NonExistentQueue" in log and "it is taken as empty" in log
    harness.stop()
    assert all(not i.processes() for i in harness.instances.values())
