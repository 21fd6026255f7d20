"""The task queue on Amazon SQS, with a dead-letter queue.

:class:`SQSQueue` creates (or finds) its queue and a ``{name}-dlq`` dead-letter queue with a
redrive policy of ``max_receives``: a message received that many times without being
deleted moves to the dead-letter queue. Sends go out in batches of 10 (SQS's limit),
receives long-poll up to 10 messages. Credentials and endpoint come from the environment,
as for every boto3 client (``AWS_ENDPOINT_URL`` included), never from the spec.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Any, Dict, Iterator, List, Optional

from wrencore_runtime.completion import CompletionSender
from wrencore_runtime.errors import QueueError
from wrencore_runtime.queues import QueueMessage, TaskQueue

logger = logging.getLogger(__name__)

#: SQS's limits: messages per batch call, and seconds of long polling per receive.
BATCH_LIMIT = 10
MAX_WAIT = 20
DLQ_SUFFIX = "-dlq"
#: Error codes worth repeating a request for (with 5xx and connection failures).
_TRANSIENT_CODES = {
    "ThrottlingException", "Throttling", "RequestThrottled", "ServiceUnavailable",
    "InternalError", "InternalFailure", "KmsThrottled", "RequestTimeout",
}


def queue_error(operation: str, queue: str, exc: BaseException) -> QueueError:
    """A :class:`QueueError` that names the SQS operation, the queue and the error."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    transient = (isinstance(exc, (BotoConnectionError, HTTPClientError))
                 or code in _TRANSIENT_CODES or status == 429 or status >= 500)
    reason = code or f"{type(exc).__name__}: {exc}"
    return QueueError(f"{operation} on queue {queue} failed: {reason}", transient=transient)


@contextlib.contextmanager
def _failing_as(operation: str, queue: str) -> Iterator[None]:
    try:
        yield
    except QueueError:
        raise
    except Exception as exc:
        raise queue_error(operation, queue, exc) from exc


def peek(client: Any, url: str, name: str, receive_count: int = 1) -> List[QueueMessage]:
    """Every message of the queue at ``url``, left there (each is visible again at once).

    A dead-letter queue is read this way: what it holds stays for inspection, and every
    client sharing it sees every letter. ``receive_count`` is what each message reports.
    """
    seen: Dict[str, QueueMessage] = {}
    for _round in range(100):
        with _failing_as("ReceiveMessage", name):
            response = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=BATCH_LIMIT, WaitTimeSeconds=0,
                VisibilityTimeout=2, AttributeNames=["ApproximateReceiveCount"])
        batch = response.get("Messages", [])
        fresh = [m for m in batch if m["MessageId"] not in seen]
        for m in fresh:
            seen[m["MessageId"]] = QueueMessage(m["MessageId"], m["Body"], m["ReceiptHandle"],
                                                receive_count)
        if not fresh:
            break
    # Make them visible again at once for the next peek.
    for message in seen.values():
        try:
            client.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message.receipt, VisibilityTimeout=0)
        except Exception as exc:  # the peek is best-effort
            logger.debug("could not release dead letter %s: %s", message.message_id, exc)
    return list(seen.values())


def _boto3_client(service: str, region: Optional[str]):
    import boto3
    from botocore.config import Config

    return boto3.client(service, region_name=region, config=Config(
        retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32))


class SQSQueue(TaskQueue):
    """A standard SQS queue and its dead-letter queue.

    Args:
        name: the queue's name (the dead-letter queue is ``name + "-dlq"``).
        region: AWS region (None: from the environment).
        max_receives: receives before a message moves to the dead-letter queue.
        visibility_timeout: the queue's default visibility timeout, seconds.
        create: create the queues if missing (workers pass False: they only use them).
        sse: server-side encryption of messages at rest: ``"sqs"`` (SSE-SQS, SQS-managed
            keys; the default), ``"kms"`` (SSE-KMS with ``kms_key_id``, default
            ``alias/aws/sqs``) or ``""`` (none).
    """

    def __init__(self, name: str, region: Optional[str] = None, max_receives: int = 3,
                 visibility_timeout: int = 30, create: bool = True, sse: str = "sqs",
                 kms_key_id: str = "") -> None:
        if sse not in ("", "sqs", "kms"):
            raise ValueError(f"SQS server-side encryption {sse!r} is not one of 'sqs' "
                             f"(SSE-SQS), 'kms' (SSE-KMS) or '' (none)")
        self.sse, self.kms_key_id = sse, kms_key_id
        if not name or len(name) > 80 - len(DLQ_SUFFIX):
            raise ValueError(f"invalid SQS queue name {name!r} (1 to {80 - len(DLQ_SUFFIX)} chars)")
        if int(max_receives) < 1:
            raise ValueError(f"max_receives must be at least 1, not {max_receives!r}")
        self.name = name
        self.region = region
        self.max_receives = int(max_receives)
        self.visibility_timeout = int(visibility_timeout)
        self.config: Dict[str, Any] = {
            "name": name, "region": region, "max_receives": self.max_receives,
            "visibility_timeout": self.visibility_timeout, "create": False, "sse": sse,
        }
        if kms_key_id:
            self.config["kms_key_id"] = kms_key_id
        self.client = _boto3_client("sqs", region)
        self._urls_lock = threading.Lock()
        self._url: Optional[str] = None
        self._dlq_url: Optional[str] = None
        if create:
            self.ensure()

    # -- setup -----------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the dead-letter queue and the queue (idempotent)."""
        dlq_url = self.client.create_queue(
            QueueName=self.name + DLQ_SUFFIX,
            Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600), **self.sse_attributes()},
        )["QueueUrl"]
        dlq_arn = self.client.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn,
                              "maxReceiveCount": str(self.max_receives)})
        attributes = {"VisibilityTimeout": str(self.visibility_timeout),
                      "RedrivePolicy": redrive, **self.sse_attributes()}
        try:
            url = self.client.create_queue(QueueName=self.name, Attributes=attributes)["QueueUrl"]
        except self.client.exceptions.QueueNameExists:
            # Exists with other attributes (e.g. another max_receives): update them.
            url = self.client.get_queue_url(QueueName=self.name)["QueueUrl"]
            self.client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        with self._urls_lock:
            self._url, self._dlq_url = url, dlq_url

    def sse_attributes(self) -> Dict[str, str]:
        """The queue attributes of its server-side encryption."""
        if self.sse == "sqs":
            return {"SqsManagedSseEnabled": "true"}
        if self.sse == "kms":
            return {"KmsMasterKeyId": self.kms_key_id or "alias/aws/sqs",
                    "SqsManagedSseEnabled": "false"}
        return {"SqsManagedSseEnabled": "false"}

    @property
    def url(self) -> str:
        with self._urls_lock:
            if self._url is None:
                self._url = self.client.get_queue_url(QueueName=self.name)["QueueUrl"]
            return self._url

    @property
    def dlq_url(self) -> str:
        with self._urls_lock:
            if self._dlq_url is None:
                self._dlq_url = self.client.get_queue_url(
                    QueueName=self.name + DLQ_SUFFIX)["QueueUrl"]
            return self._dlq_url

    def arns(self) -> List[str]:
        """The ARNs of the queue and its dead-letter queue (for IAM policies)."""
        return [
            self.client.get_queue_attributes(QueueUrl=u, AttributeNames=["QueueArn"])
            ["Attributes"]["QueueArn"]
            for u in (self.url, self.dlq_url)
        ]

    # -- TaskQueue -------------------------------------------------------------------
    def send_batch(self, bodies: List[str]) -> None:
        for start in range(0, len(bodies), BATCH_LIMIT):
            chunk = bodies[start:start + BATCH_LIMIT]
            entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
            for _attempt in range(5):
                with _failing_as("SendMessageBatch", self.name):
                    response = self.client.send_message_batch(QueueUrl=self.url,
                                                              Entries=entries)
                failed = response.get("Failed") or []
                if not failed:
                    break
                fatal = [f for f in failed if f.get("SenderFault")]
                if fatal:
                    raise RuntimeError(f"SQS refused {len(fatal)} messages: {fatal[0]}")
                failed_ids = {f["Id"] for f in failed}
                entries = [e for e in entries if e["Id"] in failed_ids]
            else:
                raise RuntimeError(f"SQS kept failing to accept {len(entries)} messages")

    def receive(self, max_messages: int = 10, wait_time: float = 20.0,
                visibility_timeout: Optional[float] = None) -> List[QueueMessage]:
        with _failing_as("GetQueueUrl", self.name):
            url = self.url
        kwargs: Dict[str, Any] = {
            "QueueUrl": url,
            "MaxNumberOfMessages": max(1, min(BATCH_LIMIT, int(max_messages))),
            "WaitTimeSeconds": max(0, min(MAX_WAIT, int(round(wait_time)))),
            "AttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = int(visibility_timeout)
        with _failing_as("ReceiveMessage", self.name):
            response = self.client.receive_message(**kwargs)
        return [
            QueueMessage(
                message_id=m["MessageId"], body=m["Body"], receipt=m["ReceiptHandle"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in response.get("Messages", [])
        ]

    def delete(self, message: QueueMessage) -> None:
        self.client.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt)

    def delete_many(self, messages: List[QueueMessage]) -> None:
        for start in range(0, len(messages), BATCH_LIMIT):
            chunk = messages[start:start + BATCH_LIMIT]
            response = self.client.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)])
            for failure in response.get("Failed") or []:
                self.delete(chunk[int(failure["Id"])])

    def change_visibility(self, message: QueueMessage, timeout: float) -> None:
        self.client.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=message.receipt, VisibilityTimeout=int(timeout))

    def depth(self) -> Dict[str, int]:
        with _failing_as("GetQueueAttributes", self.name):
            attributes = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ])["Attributes"]
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0))
            + int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        }

    def purge(self) -> None:
        """Delete every message of the queue (and of its dead-letter queue).

        SQS allows one PurgeQueue per queue per minute, so this drains by receiving instead.
        """
        for url in (self.url, self.dlq_url):
            while True:
                messages = self.client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=BATCH_LIMIT, WaitTimeSeconds=0,
                    VisibilityTimeout=30).get("Messages", [])
                if not messages:
                    break
                self.client.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)])

    def dead_letters(self) -> List[QueueMessage]:
        """Peek at the dead-letter queue (messages stay there)."""
        return peek(self.client, self.dlq_url, self.name + DLQ_SUFFIX, self.max_receives)

    def delete_queues(self) -> None:
        for url in (self.url, self.dlq_url):
            self.client.delete_queue(QueueUrl=url)



class SqsCompletionSender(CompletionSender):
    """Sends outcomes to a client's SQS completion queue (``wrencore_aws.completion`` makes
    the queue and names this class in the job's ``completion`` spec)."""

    #: SQS takes message bodies up to 256 KiB; keep a margin.
    body_limit = 250 * 1024

    def __init__(self, url: str, region: str = "") -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        # its own session: the default session's client factory is not thread-safe
        self._client = boto3.session.Session().client(
            "sqs", region_name=region or None,
            config=Config(retries={"mode": "standard", "max_attempts": 5}))

    def send(self, body: str) -> None:
        self._client.send_message(QueueUrl=self.url, MessageBody=body)
