"""The task queue on Google Cloud Pub/Sub, with a dead-letter topic.

Both halves live here: the client publishes, the worker daemon pulls, acknowledges and
extends deadlines — all through :class:`~wrencore_runtime.queues.TaskQueue`.

A queue named ``name`` is the topic ``name``, the workers' subscription ``name-workers``,
the dead-letter topic ``name-dlq`` and its subscription ``name-dlq-peek`` (created with the
queue, so no dead letter is lost before anyone looks). The subscription's dead-letter policy
moves a message there after ``max_receives`` delivery attempts (Pub/Sub allows 5 to 100).
On Google Cloud the Pub/Sub service agent needs ``roles/pubsub.publisher`` on the
dead-letter topic and ``roles/pubsub.subscriber`` on the subscription; see Pub/Sub's
dead-letter documentation.

The ``[gcp_pubsub]`` configuration table::

    [gcp_pubsub]
    name = "wrencore"          # topic; subscriptions are derived from it
    project = "my-project"     # default: Google's default credentials' project
    max_receives = 5           # delivery attempts before the dead-letter topic (5..100)
    ack_deadline = 60          # seconds; extended while a call runs (10..600)

Credentials come from Google's default chain (``GOOGLE_APPLICATION_CREDENTIALS``, the
metadata server, gcloud); with ``PUBSUB_EMULATOR_HOST`` set the clients talk to the emulator
and need none. Publishing is batched by the client library; receiving is a synchronous
pull of up to ``max_messages``; acknowledging is one request per batch.

Pub/Sub tells no backlog size through its own API (Cloud Monitoring does, minutes late), so
:meth:`PubSubQueue.depth` is this client's view: what its last pull saw and what it holds.
That is what a worker's idle check needs — its own pulls came back empty for the whole idle
timeout — and it errs towards "not empty".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional

from wrencore_runtime.queues import QueueMessage, TaskQueue

logger = logging.getLogger(__name__)

SUBSCRIPTION_SUFFIX = "-workers"
DLQ_SUFFIX = "-dlq"
PEEK_SUFFIX = "-dlq-peek"
#: Pub/Sub's bounds: delivery attempts of a dead-letter policy, and ack deadlines (seconds).
MIN_ATTEMPTS, MAX_ATTEMPTS = 5, 100
MIN_DEADLINE, MAX_DEADLINE = 10, 600
#: Ack ids per acknowledge / modify_ack_deadline request (Pub/Sub's request size limit).
ACK_BATCH = 1000
#: The shortest wait of one pull request, seconds.
PULL_MIN_WAIT = 0.5


def default_project() -> str:
    """The project of Google's default credentials (or of the environment)."""
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "PUBSUB_PROJECT_ID"):
        if os.environ.get(name):
            return os.environ[name]
    import google.auth

    _credentials, project = google.auth.default()
    if not project:
        raise ValueError("no Google Cloud project: set [gcp_pubsub] project = \"...\" or "
                         "GOOGLE_CLOUD_PROJECT")
    return project


class PubSubQueue(TaskQueue):
    """A Pub/Sub topic, its workers' subscription and a dead-letter topic.

    Args:
        name: the topic's id (subscriptions and the dead-letter topic derive from it).
        project: the Google Cloud project (None: the default credentials' project).
        max_receives: delivery attempts before a message moves to the dead-letter topic.
        ack_deadline: the subscription's acknowledgement deadline, seconds.
        create: create topics and subscriptions if missing (workers pass False).
    """

    def __init__(self, name: str = "wrencore", project: Optional[str] = None,
                 max_receives: int = MIN_ATTEMPTS, ack_deadline: int = 60,
                 create: bool = True) -> None:
        if not name or len(name) < 3 or len(name) + len(PEEK_SUFFIX) > 255:
            raise ValueError(f"invalid Pub/Sub topic name {name!r} (3 to 246 characters)")
        max_receives, ack_deadline = int(max_receives), int(ack_deadline)
        if not MIN_ATTEMPTS <= max_receives <= MAX_ATTEMPTS:
            raise ValueError(f"[gcp_pubsub] max_receives must be {MIN_ATTEMPTS}..{MAX_ATTEMPTS} "
                             f"(Pub/Sub's bounds on delivery attempts), not {max_receives}")
        if not MIN_DEADLINE <= ack_deadline <= MAX_DEADLINE:
            raise ValueError(f"[gcp_pubsub] ack_deadline must be {MIN_DEADLINE}..{MAX_DEADLINE} "
                             f"seconds, not {ack_deadline}")
        self.name = name
        self.project = project or default_project()
        self.max_receives = max_receives
        self.ack_deadline = ack_deadline
        self.config: Dict[str, Any] = {
            "name": name, "project": self.project, "max_receives": max_receives,
            "ack_deadline": ack_deadline, "create": False,
        }
        self.topic = f"projects/{self.project}/topics/{name}"
        self.dlq_topic = self.topic + DLQ_SUFFIX
        self.subscription = f"projects/{self.project}/subscriptions/{name}{SUBSCRIPTION_SUFFIX}"
        self.peek_subscription = f"projects/{self.project}/subscriptions/{name}{PEEK_SUFFIX}"
        self._lock = threading.Lock()
        self._publisher: Any = None
        self._subscriber: Any = None
        self._held: Dict[str, float] = {}   # ack id -> when its deadline ends (monotonic)
        self._last_pulled = 0
        if create:
            self.ensure()

    def __repr__(self) -> str:
        return f"<PubSubQueue {self.topic}>"

    # -- clients ---------------------------------------------------------------------
    @property
    def publisher(self) -> Any:
        with self._lock:
            if self._publisher is None:
                from google.cloud import pubsub_v1

                self._publisher = pubsub_v1.PublisherClient(
                    batch_settings=pubsub_v1.types.BatchSettings(
                        max_messages=1000, max_bytes=9 * 1024 * 1024, max_latency=0.01))
            return self._publisher

    @property
    def subscriber(self) -> Any:
        with self._lock:
            if self._subscriber is None:
                from google.cloud import pubsub_v1

                self._subscriber = pubsub_v1.SubscriberClient()
            return self._subscriber

    # -- setup -----------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the topics and subscriptions if missing, and set the dead-letter policy."""
        from google.api_core import exceptions

        for topic in (self.dlq_topic, self.topic):
            try:
                self.publisher.create_topic(request={"name": topic})
            except exceptions.AlreadyExists:
                pass
        subscription = {
            "name": self.subscription, "topic": self.topic,
            "ack_deadline_seconds": self.ack_deadline,
            "dead_letter_policy": {"dead_letter_topic": self.dlq_topic,
                                   "max_delivery_attempts": self.max_receives},
        }
        try:
            self.subscriber.create_subscription(request=subscription)
        except exceptions.AlreadyExists:
            # Exists, maybe with other settings (another max_receives): update them.
            self.subscriber.update_subscription(request={
                "subscription": subscription,
                "update_mask": {"paths": ["ack_deadline_seconds", "dead_letter_policy"]}})
        try:
            self.subscriber.create_subscription(request={
                "name": self.peek_subscription, "topic": self.dlq_topic,
                "ack_deadline_seconds": MIN_DEADLINE})
        except exceptions.AlreadyExists:
            pass

    # -- TaskQueue -------------------------------------------------------------------
    def send_batch(self, bodies: List[str]) -> None:
        futures = [self.publisher.publish(self.topic, body.encode()) for body in bodies]
        for future in futures:
            future.result(timeout=120)

    def receive(self, max_messages: int = 10, wait_time: float = 20.0,
                visibility_timeout: Optional[float] = None) -> List[QueueMessage]:
        deadline = time.monotonic() + max(0.0, wait_time)
        while True:
            # A pull waits for messages until its own deadline (or the server's, some
            # seconds); an empty one ends as DeadlineExceeded.
            received = self._pull(self.subscription, max_messages,
                                  max(PULL_MIN_WAIT, min(deadline - time.monotonic(), 60.0)))
            if received or time.monotonic() >= deadline:
                break
        self._last_pulled = len(received)
        messages = [QueueMessage(message_id=m.message.message_id,
                                 body=m.message.data.decode("utf-8", "replace"),
                                 receipt=m.ack_id, receive_count=max(1, m.delivery_attempt))
                    for m in received]
        seconds = self.ack_deadline if visibility_timeout is None else visibility_timeout
        if messages and visibility_timeout is not None and int(seconds) != self.ack_deadline:
            self._modify(messages, seconds)
        with self._lock:
            until = time.monotonic() + seconds
            self._held.update((m.receipt, until) for m in messages)
        return messages

    def _pull(self, subscription: str, max_messages: int, wait: float) -> List[Any]:
        from google.api_core import exceptions

        try:
            response = self.subscriber.pull(
                request={"subscription": subscription, "max_messages": max(1, int(max_messages))},
                timeout=wait, retry=None)
        except exceptions.DeadlineExceeded:
            return []
        return list(response.received_messages)

    def _modify(self, messages: List[QueueMessage], seconds: float) -> None:
        ack_ids = [m.receipt for m in messages]
        seconds = 0 if seconds <= 0 else max(MIN_DEADLINE, min(MAX_DEADLINE, int(seconds)))
        for start in range(0, len(ack_ids), ACK_BATCH):
            self.subscriber.modify_ack_deadline(request={
                "subscription": self.subscription, "ack_ids": ack_ids[start:start + ACK_BATCH],
                "ack_deadline_seconds": seconds})
        with self._lock:
            for ack_id in ack_ids:
                if seconds:
                    self._held[ack_id] = time.monotonic() + seconds
                else:
                    self._held.pop(ack_id, None)

    def delete(self, message: QueueMessage) -> None:
        self.delete_many([message])

    def delete_many(self, messages: List[QueueMessage]) -> None:
        ack_ids = [m.receipt for m in messages]
        for start in range(0, len(ack_ids), ACK_BATCH):
            self.subscriber.acknowledge(request={
                "subscription": self.subscription, "ack_ids": ack_ids[start:start + ACK_BATCH]})
        with self._lock:
            for ack_id in ack_ids:
                self._held.pop(ack_id, None)

    def change_visibility(self, message: QueueMessage, timeout: float) -> None:
        """Extend (or with 0, end at once) the message's acknowledgement deadline."""
        self._modify([message], timeout)

    def depth(self) -> Dict[str, int]:
        """This client's view: messages its last pull returned, and those it still holds."""
        now = time.monotonic()
        with self._lock:
            for ack_id in [a for a, until in self._held.items() if until <= now]:
                del self._held[ack_id]
            return {"visible": self._last_pulled, "in_flight": len(self._held)}

    def purge(self) -> None:
        """Acknowledge every message of the subscription and of the dead-letter topic."""
        for subscription in (self.subscription, self.peek_subscription):
            while True:
                ack_ids = [m.ack_id for m in self._pull(subscription, 1000, 2.0)]
                if not ack_ids:
                    break
                self.subscriber.acknowledge(request={"subscription": subscription,
                                                     "ack_ids": ack_ids})

    def dead_letters(self) -> List[QueueMessage]:
        """Peek at the dead-letter topic's messages (they stay there)."""
        seen: Dict[str, QueueMessage] = {}
        ack_ids: List[str] = []
        for _round in range(20):
            received = self._pull(self.peek_subscription, 1000, 2.0 if not seen else 0.5)
            fresh = [m for m in received if m.message.message_id not in seen]
            ack_ids += [m.ack_id for m in received]
            for m in fresh:
                seen[m.message.message_id] = QueueMessage(
                    m.message.message_id, m.message.data.decode("utf-8", "replace"), m.ack_id,
                    self.max_receives)
            if not fresh:
                break
        for start in range(0, len(ack_ids), ACK_BATCH):  # visible again for the next peek
            try:
                self.subscriber.modify_ack_deadline(request={
                    "subscription": self.peek_subscription,
                    "ack_ids": ack_ids[start:start + ACK_BATCH], "ack_deadline_seconds": 0})
            except Exception as exc:  # the peek is best-effort
                logger.debug("could not release dead letters: %s", exc)
        return list(seen.values())

    def delete_queues(self) -> None:
        for subscription in (self.subscription, self.peek_subscription):
            self.subscriber.delete_subscription(request={"subscription": subscription})
        for topic in (self.topic, self.dlq_topic):
            self.publisher.delete_topic(request={"topic": topic})
