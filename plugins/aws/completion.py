"""The completion channel on AWS: one SQS queue per client, deleted at shutdown.

Workers send each outcome they write to storage to the queue (``wrencore_runtime.completion``
with this plugin's worker half, ``wrencore_aws.sqs.SqsCompletionSender``); :class:`~wrencore.watcher.StatusWatcher` receives and
deletes them ten at a time. The queue is named ``wrencore-done-<random>``: the generated
worker policies allow ``sqs:SendMessage`` on ``wrencore-done-*`` only
(:data:`QUEUE_PREFIX`, :func:`send_statement`).

A client that dies (killed, a notebook kernel restarted) leaves its queue behind. Each
queue is tagged with its client's host, process id and a heartbeat the client refreshes
while it listens (:data:`HEARTBEAT_EVERY`); :func:`sweep_orphaned_queues` deletes the
queues whose client is gone — a process on this host that no longer runs, or a heartbeat
older than :data:`STALE_AFTER` — and every new channel runs it once per process and
region in the background, so the next executor cleans up after a crashed one.

The listening thread's ``ReceiveMessage`` and ``DeleteMessageBatch`` go through
:class:`~wrencore_aws.resend.Resender`: botocore makes the first of each, later ones are
serialized here as botocore does (checked against botocore's first request), re-signed and
sent on the client's HTTP session; a failed one is made again through botocore, so errors,
their classes and retries are botocore's.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

from wrencore.watcher import CompletionChannel
from wrencore_aws.sqs import queue_error

from .clients import make_client
from .resend import Resender

logger = logging.getLogger(__name__)

#: Every completion queue's name starts with this; IAM policies are scoped to it.
QUEUE_PREFIX = "wrencore-done-"
#: Seconds a received message stays invisible before it could come again (never needed:
#: messages are deleted within about a second of being received).
VISIBILITY_TIMEOUT = 300
#: A message nobody receives (a client that died) is gone after a day.
RETENTION = 86400
#: Seconds between a listening client's heartbeats (a tag on its queue).
HEARTBEAT_EVERY = 600
#: A queue whose heartbeat is older than this has lost its client, wherever it ran.
STALE_AFTER = 6 * 3600
#: The tags that say whose a queue is.
HOST_TAG, PID_TAG, HEARTBEAT_TAG = "wrencore:host", "wrencore:pid", "wrencore:heartbeat"

_swept: set = set()  # regions swept by this process
_swept_lock = threading.Lock()


def list_statement() -> Dict[str, Any]:
    """The IAM statement a client needs to find orphaned completion queues (by prefix) and
    sweep them. ``ListQueues`` takes no resource: ``*`` is the only one."""
    return {"Sid": "FindCompletionQueues", "Effect": "Allow", "Action": "sqs:ListQueues",
            "Resource": "*"}


def send_statement(region: str, account: str) -> Dict[str, Any]:
    """The IAM statement workers need to publish outcomes to any client's completion queue."""
    return {"Sid": "CompletionQueues", "Effect": "Allow", "Action": "sqs:SendMessage",
            "Resource": f"arn:aws:sqs:{region}:{account}:{QUEUE_PREFIX}*"}


class SQSCompletionChannel(CompletionChannel):
    """An SQS queue created on first use (``spec``) and deleted by ``close``.

    Args:
        section: a config table whose ``region`` (if any) the SQS client uses.
    """

    def __init__(self, section: Optional[Dict[str, Any]] = None) -> None:
        self.name = f"{QUEUE_PREFIX}{uuid.uuid4().hex[:16]}"
        self._section = {"region": (section or {}).get("region")}
        self._client: Any = None
        self._url: Optional[str] = None
        self._closed = False
        self._heartbeat = 0.0
        self._lock = threading.Lock()
        self._receiver: Any = None
        self._deleter: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    client = make_client("sqs", self._section, max_attempts=5)
                    self._receiver = Resender(client, "ReceiveMessage", errors="botocore")
                    self._deleter = Resender(client, "DeleteMessageBatch", errors="botocore")
                    self._client = client
        return self._client

    @property
    def ready(self) -> bool:
        return self._url is not None and not self._closed

    def spec(self) -> Dict[str, Any]:
        client = self.client
        with self._lock:
            if self._closed:
                raise RuntimeError("the completion channel has been closed")
            if self._url is None:
                self._url = client.create_queue(QueueName=self.name, Attributes={
                    "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
                    "MessageRetentionPeriod": str(RETENTION)}, tags=owner_tags())["QueueUrl"]
                self._heartbeat = time.time()
                logger.info("created completion queue %s", self.name)
                sweep_in_background(client, keep=[self._url])
        return {"class": "wrencore_aws.sqs:SqsCompletionSender",
                "config": {"url": self._url, "region": client.meta.region_name}}

    def receive(self, wait: float) -> List[Tuple[Any, Any]]:
        try:
            if time.time() - self._heartbeat >= HEARTBEAT_EVERY:
                self._heartbeat = time.time()
                self.client.tag_queue(QueueUrl=self._url,
                                      Tags={HEARTBEAT_TAG: str(int(self._heartbeat))})
            params = {"QueueUrl": self._url, "MaxNumberOfMessages": 10,
                      "WaitTimeSeconds": int(max(0, wait))}
            response = self._receiver.call(self._url, _json_body(params),
                                           lambda: self.client.receive_message(**params))
        except Exception as exc:  # a QueueError naming the queue; transient or not
            raise queue_error("ReceiveMessage", self.name, exc) from exc
        return [(m["Body"], m["ReceiptHandle"]) for m in response.get("Messages", ())]

    def acknowledge(self, handles: List[Any]) -> None:
        client = self.client
        for start in range(0, len(handles), 10):
            params = {"QueueUrl": self._url, "Entries": [
                {"Id": str(i), "ReceiptHandle": h}
                for i, h in enumerate(handles[start:start + 10])]}
            self._deleter.call(self._url, _json_body(params),
                               lambda: client.delete_message_batch(**params))

    def close(self) -> None:
        with self._lock:
            url, self._closed = self._url, True
        if url is not None:
            self.client.delete_queue(QueueUrl=url)
            logger.info("deleted completion queue %s", self.name)


def _json_body(params: Dict[str, Any]) -> bytes:
    """The body botocore's JSON protocol sends for ``params`` of plain strings, numbers,
    lists and structures whose member names are their wire names (as ReceiveMessage's and
    DeleteMessageBatch's are): ``json.dumps`` of them in the given order, UTF-8.
    :class:`~wrencore_aws.resend.Resender` checks it against botocore's first request."""
    return json.dumps(params).encode("utf-8")


def owner_tags() -> Dict[str, str]:
    """Tags naming this process as a completion queue's client."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            HEARTBEAT_TAG: str(int(time.time()))}


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def orphan_reason(tags: Dict[str, str], now: float, stale_after: float) -> Optional[str]:
    """Why a completion queue with ``tags`` has lost its client, or None if it may not have."""
    try:
        heartbeat = float(tags.get(HEARTBEAT_TAG, ""))
    except ValueError:
        heartbeat = None
    if heartbeat is not None and now - heartbeat > stale_after:
        return f"no heartbeat for {now - heartbeat:.0f} s"
    pid = tags.get(PID_TAG, "")
    if tags.get(HOST_TAG) == socket.gethostname() and pid.isdigit() and pid != str(os.getpid()) \
            and not _process_running(int(pid)):
        return f"its client, process {pid} on this host, is gone"
    if heartbeat is None:
        return "it carries no heartbeat (made before queues were tagged, or not by wrencore)" \
            if not tags else None
    return None


def sweep_orphaned_queues(client: Any, *, stale_after: float = STALE_AFTER,
                          keep: Iterable[str] = ()) -> List[str]:
    """Delete the completion queues (``wrencore-done-*``) whose client is gone.

    A queue is an orphan when its client ran on this host and that process no longer runs,
    or when its heartbeat is older than ``stale_after`` seconds (clients on other hosts).
    An untagged queue counts as an orphan only when it is older than ``stale_after``.

    Args:
        client: a boto3 SQS client of the region to sweep.
        stale_after: seconds without a heartbeat after which a queue is an orphan.
        keep: queue URLs never to delete (this client's own).

    Returns:
        The URLs of the queues deleted.
    """
    keep = set(keep)
    now = time.time()
    deleted = []
    for page in client.get_paginator("list_queues").paginate(QueueNamePrefix=QUEUE_PREFIX):
        for url in page.get("QueueUrls") or ():
            if url in keep:
                continue
            try:
                tags = client.list_queue_tags(QueueUrl=url).get("Tags") or {}
                reason = orphan_reason(tags, now, stale_after)
                if reason and not tags:
                    created = float(client.get_queue_attributes(
                        QueueUrl=url, AttributeNames=["CreatedTimestamp"]
                    )["Attributes"]["CreatedTimestamp"])
                    reason = reason if now - created > stale_after else None
                if reason is None:
                    continue
                client.delete_queue(QueueUrl=url)
            except Exception as exc:  # gone meanwhile, or not ours to delete
                logger.debug("could not sweep completion queue %s: %s", url, exc)
                continue
            logger.info("deleted orphaned completion queue %s: %s", url, reason)
            deleted.append(url)
    return deleted


def sweep_in_background(client: Any, *, keep: Iterable[str] = ()) -> None:
    """Run :func:`sweep_orphaned_queues` once per process and region, in a daemon thread."""
    region = (client.meta.endpoint_url, client.meta.region_name)
    with _swept_lock:
        if region in _swept:
            return
        _swept.add(region)

    def sweep() -> None:
        try:
            sweep_orphaned_queues(client, keep=keep)
        except Exception as exc:
            logger.warning("could not sweep orphaned completion queues: %s", exc)

    threading.Thread(target=sweep, name="wrencore-sweep-completion-queues", daemon=True).start()


def channel_for(config: Any, section: Optional[Dict[str, Any]] = None
                ) -> Optional[SQSCompletionChannel]:
    """A completion channel, unless the top-level ``completion_channel`` is false."""
    if not config.top().bool("completion_channel", True):
        return None
    return SQSCompletionChannel(section)


def with_channel(job: Dict[str, Any], channel: Optional[CompletionChannel]) -> Dict[str, Any]:
    """``job`` with its channel's address for workers; unchanged (storage is listed instead)
    when there is no channel or it cannot be created."""
    if channel is None:
        return job
    try:
        return dict(job, completion=channel.spec())
    except Exception as exc:
        logger.warning("no completion channel (finished calls are found by listing storage "
                       "instead): %s", exc)
        return job
