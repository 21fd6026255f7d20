"""Completion queues left by a client that died are swept (moto server)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import boto3
import pytest

from wrencore_aws import completion
from wrencore_aws.completion import (HEARTBEAT_TAG, HOST_TAG, PID_TAG, QUEUE_PREFIX,
                                     SQSCompletionChannel, sweep_orphaned_queues)


def dead_pid() -> int:
    """The id of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_queue(sqs, tags, prefix=QUEUE_PREFIX) -> str:
    name = f"{prefix}{uuid.uuid4().hex[:16]}"
    return sqs.create_queue(QueueName=name, tags=tags)["QueueUrl"]


def queue_exists(sqs, url: str) -> bool:
    return url in sqs.list_queues(QueueNamePrefix=url.rsplit("/", 1)[-1]).get("QueueUrls", [])


@pytest.fixture
def sqs(aws_env):
    client = boto3.client("sqs")
    yield client
    for url in client.list_queues(QueueNamePrefix=QUEUE_PREFIX).get("QueueUrls", []):
        client.delete_queue(QueueUrl=url)


def test_sweep_deletes_only_queues_whose_client_is_gone(sqs):
    now = int(time.time())
    here = socket.gethostname()
    dead_here = make_queue(sqs, {HOST_TAG: here, PID_TAG: str(dead_pid()),
                                 HEARTBEAT_TAG: str(now)})
    silent_elsewhere = make_queue(sqs, {HOST_TAG: "other-host", PID_TAG: "1",
                                        HEARTBEAT_TAG: str(now - 7 * 3600)})
    alive_elsewhere = make_queue(sqs, {HOST_TAG: "other-host", PID_TAG: "1",
                                       HEARTBEAT_TAG: str(now - 60)})
    this_process = make_queue(sqs, completion.owner_tags())
    alive_here = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running_here = make_queue(sqs, {HOST_TAG: here, PID_TAG: str(alive_here.pid),
                                        HEARTBEAT_TAG: str(now)})
        not_ours = make_queue(sqs, {HOST_TAG: here, PID_TAG: str(dead_pid()),
                                    HEARTBEAT_TAG: "0"}, prefix="someone-else-")
        untagged_new = make_queue(sqs, {})

        deleted = sweep_orphaned_queues(sqs)

        assert sorted(deleted) == sorted([dead_here, silent_elsewhere])
        for url in (alive_elsewhere, this_process, running_here, not_ours, untagged_new):
            assert queue_exists(sqs, url), url
        assert not queue_exists(sqs, dead_here) and not queue_exists(sqs, silent_elsewhere)
        assert sweep_orphaned_queues(sqs) == []
    finally:
        alive_here.kill()
        alive_here.wait()
        sqs.delete_queue(QueueUrl=not_ours)


def test_a_new_channel_sweeps_orphans_once_and_keeps_itself(sqs, monkeypatch):
    monkeypatch.setattr(completion, "_swept", set())
    orphan = make_queue(sqs, {HOST_TAG: socket.gethostname(), PID_TAG: str(dead_pid()),
                              HEARTBEAT_TAG: str(int(time.time()))})
    channel = SQSCompletionChannel()
    spec = channel.spec()
    deadline = time.monotonic() + 10
    while queue_exists(sqs, orphan) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not queue_exists(sqs, orphan)
    assert queue_exists(sqs, spec["config"]["url"])
    tags = sqs.list_queue_tags(QueueUrl=spec["config"]["url"])["Tags"]
    assert tags[PID_TAG] == str(completion.os.getpid())

    # A second channel of this process does not sweep again.
    second_orphan = make_queue(sqs, {HOST_TAG: socket.gethostname(),
                                     PID_TAG: str(dead_pid()), HEARTBEAT_TAG: "1"})
    other = SQSCompletionChannel()
    other.spec()
    time.sleep(0.5)
    assert queue_exists(sqs, second_orphan)
    channel.close()
    other.close()


def test_a_listening_channel_refreshes_its_heartbeat(sqs, monkeypatch):
    monkeypatch.setattr(completion, "_swept", {("skip", "skip")})
    channel = SQSCompletionChannel()
    url = channel.spec()["config"]["url"]
    sqs.tag_queue(QueueUrl=url, Tags={HEARTBEAT_TAG: "5"})
    channel.receive(0)  # heartbeat not due yet
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"][HEARTBEAT_TAG] == "5"
    monkeypatch.setattr(completion, "HEARTBEAT_EVERY", 0)
    channel.receive(0)
    assert int(sqs.list_queue_tags(QueueUrl=url)["Tags"][HEARTBEAT_TAG]) >= time.time() - 60
    assert sweep_orphaned_queues(sqs, stale_after=3600) == []
    channel.close()
