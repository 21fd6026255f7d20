"""The completion channel on AWS: one SQS queue per client, deleted at shutdown.

Workers send each outcome they write to storage to the queue (see
``wrencore_runtime.completion``); :class:`~wrencore.watcher.StatusWatcher` receives and
deletes them ten at a time. The queue is named ``wrencore-done-<random>``: the generated
worker policies allow ``sqs:SendMessage`` on ``wrencore-done-*`` only
(:data:`QUEUE_PREFIX`, :func:`send_statement`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Dict, List, Optional, Tuple

from wrencore.watcher import CompletionChannel
from wrencore_runtime.queue_sqs import queue_error

from .clients import make_client

logger = logging.getLogger(__name__)

#: Every completion queue's name starts with this; IAM policies are scoped to it.
QUEUE_PREFIX = "wrencore-done-"
#: Seconds a received message stays invisible before it could come again (never needed:
#: messages are deleted within about a second of being received).
VISIBILITY_TIMEOUT = 300
#: A message nobody receives (a client that died) is gone after a day.
RETENTION = 86400


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
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = make_client("sqs", self._section, max_attempts=5)
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
                    "MessageRetentionPeriod": str(RETENTION)})["QueueUrl"]
                logger.info("created completion queue %s", self.name)
        return {"kind": "sqs", "url": self._url, "region": client.meta.region_name}

    def receive(self, wait: float) -> List[Tuple[Any, Any]]:
        try:
            response = self.client.receive_message(
                QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=int(max(0, wait)))
        except Exception as exc:  # a QueueError naming the queue; transient or not
            raise queue_error("ReceiveMessage", self.name, exc) from exc
        return [(m["Body"], m["ReceiptHandle"]) for m in response.get("Messages", ())]

    def acknowledge(self, handles: List[Any]) -> None:
        for start in range(0, len(handles), 10):
            self.client.delete_message_batch(QueueUrl=self._url, Entries=[
                {"Id": str(i), "ReceiptHandle": h}
                for i, h in enumerate(handles[start:start + 10])])

    def close(self) -> None:
        with self._lock:
            url, self._closed = self._url, True
        if url is not None:
            self.client.delete_queue(QueueUrl=url)
            logger.info("deleted completion queue %s", self.name)


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
