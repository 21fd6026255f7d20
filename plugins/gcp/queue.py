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
and need none. Publishing is batched by the client library; receiving is a pull of up to
``max_messages`` (synchronous, or started ahead with :meth:`PubSubQueue.start_receive`, in
a thread of the queue's own);
acknowledging is one request per batch. The worker's requests — pull, acknowledge, modify
the deadline — go straight to the client's gRPC channel with the protobuf messages
(:class:`_Stubs`): the client library's per-request layers (request conversion, retry and
timeout wrappers, proto-plus wrappers of the answer) cost more CPU than the worker's
whole per-call work on the emulator.

Pub/Sub tells no backlog size through its own API. :meth:`PubSubQueue.depth` combines this
client's view — what its last pull saw and what it holds — with Cloud Monitoring's
``subscription/num_undelivered_messages`` (google-cloud-monitoring, part of the ``gcp``
extra), whose newest point is a minute or more old: ``visible`` is the larger of the two, so
the depth errs towards "not empty". Without Monitoring — the emulator has none, the library
is missing, or the credentials may not read it (``roles/monitoring.viewer``) — it is the
client's view alone, which is what a worker's idle check needs: its own pulls came back empty
for the whole idle timeout.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional

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
#: The shortest wait of one pull request, seconds; the longest of one made for a receive
#: started ahead (a cancel waits for it).
PULL_MIN_WAIT = 0.5
PULL_AHEAD_SLICE = 1.0
#: Seconds the puller thread of receives started ahead outlives the last one.
PULLER_IDLE = 30.0
#: Seconds an acknowledge or modify_ack_deadline request may take; the pauses before the
#: next attempts of one that fails with a transient status (see :attr:`_Stubs.transient`).
REQUEST_TIMEOUT = 60.0
RETRY_PAUSES = (0.1, 0.5, 2.0)
#: Cloud Monitoring's backlog metric of a subscription, and how it is read: the newest point
#: of the last LOOKBACK seconds, asked for at most every REFRESH seconds (it changes once a
#: minute); after a failure, Monitoring is left alone for RETRY_AFTER seconds.
BACKLOG_METRIC = "pubsub.googleapis.com/subscription/num_undelivered_messages"
BACKLOG_LOOKBACK, BACKLOG_REFRESH, BACKLOG_RETRY_AFTER = 600.0, 30.0, 600.0


def backlog_request(project: str, subscription_id: str, now: float) -> Dict[str, Any]:
    """The ``ListTimeSeries`` request for a subscription's undelivered messages."""
    return {
        "name": f"projects/{project}",
        "filter": (f'metric.type = "{BACKLOG_METRIC}" AND '
                   f'resource.type = "pubsub_subscription" AND '
                   f'resource.labels.subscription_id = "{subscription_id}"'),
        "interval": {"end_time": {"seconds": int(now) + 1},
                     "start_time": {"seconds": int(now - BACKLOG_LOOKBACK)}},
        "view": "FULL",
    }


def newest_backlog(series: Any) -> Optional[int]:
    """The newest point's value among ``ListTimeSeries`` results, or None if none has one."""
    newest: Optional[tuple] = None
    for one in series:
        for point in one.points:
            end = point.interval.end_time
            stamp = end.timestamp() if hasattr(end, "timestamp") else end.seconds
            if newest is None or stamp > newest[0]:
                newest = (stamp, int(point.value.int64_value))
    return None if newest is None else newest[1]


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


class _Stubs:
    """The subscriber's unary requests on the client library's own gRPC channel (its
    credentials, its connection), sent as the protobuf messages the library wraps."""

    def __init__(self, client: Any, subscription: str) -> None:
        import grpc
        from google.api_core import exceptions
        from google.protobuf.empty_pb2 import Empty
        from google.pubsub_v1.types import pubsub

        self.grpc, self.exceptions = grpc, exceptions
        self.transient = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED,
                          grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNKNOWN}
        channel = client.transport.grpc_channel
        self.PullRequest = pubsub.PullRequest.pb()
        self.AcknowledgeRequest = pubsub.AcknowledgeRequest.pb()
        self.ModifyAckDeadlineRequest = pubsub.ModifyAckDeadlineRequest.pb()

        def method(name: str, request: Any, response: Any) -> Any:
            return channel.unary_unary(f"/google.pubsub.v1.Subscriber/{name}",
                                       request_serializer=request.SerializeToString,
                                       response_deserializer=response.FromString)

        self.pull = method("Pull", self.PullRequest, pubsub.PullResponse.pb())
        self.acknowledge = method("Acknowledge", self.AcknowledgeRequest, Empty)
        self.modify_ack_deadline = method("ModifyAckDeadline",
                                          self.ModifyAckDeadlineRequest, Empty)
        self.metadata = self.routing(subscription)

    @staticmethod
    def routing(subscription: str) -> tuple:
        """The routing header the client library sends with a subscription's requests."""
        from urllib.parse import quote

        return (("x-goog-request-params", "subscription=" + quote(subscription, safe="")),)

    def error(self, exc: Any) -> Exception:
        """A gRPC error as the client library raises it (``google.api_core.exceptions``),
        saying whether it is ``transient`` (the daemon backs off and asks again) or not (a
        deleted subscription, a revoked permission: it brings no more work)."""
        error = self.exceptions.from_grpc_error(exc)
        error.transient = exc.code() in self.transient
        return error

    def call(self, method: Any, request: Any, metadata: tuple) -> Any:
        """``method(request)``, again after a transient failure; an error as the client
        library raises it (``google.api_core.exceptions``)."""
        for pause in RETRY_PAUSES + (None,):
            try:
                return method(request, timeout=REQUEST_TIMEOUT, metadata=metadata)
            except self.grpc.RpcError as exc:
                if pause is None or exc.code() not in self.transient:
                    raise self.error(exc) from exc
                time.sleep(pause)


class PendingPull:
    """A receive started ahead of need (:meth:`PubSubQueue.start_receive`): the queue's
    puller thread makes its pulls while the worker runs calls."""

    def __init__(self, queue: "PubSubQueue", max_messages: int, wait_time: float,
                 visibility_timeout: Optional[float],
                 on_arrival: Optional[Callable[[List[QueueMessage]], None]]) -> None:
        self.queue, self.max_messages = queue, max(1, int(max_messages))
        self.wait_time = wait_time
        self.visibility_timeout = visibility_timeout
        self._on_arrival = on_arrival
        self._messages: List[QueueMessage] = []
        self._error: Optional[BaseException] = None
        self._cancelled = False
        self._held = False
        self._done = threading.Event()

    def _run(self) -> None:
        """In the puller thread: pull, a slice of the wait at a time so that a cancel is
        seen soon, until messages arrive or the wait is over; then tell of their arrival
        (they are held from now on; a deadline other than the subscription's is asked for
        by :meth:`result`)."""
        queue = self.queue
        try:
            deadline = time.monotonic() + max(0.0, self.wait_time)
            while not self._cancelled:
                wait = max(PULL_MIN_WAIT, min(deadline - time.monotonic(), PULL_AHEAD_SLICE))
                received = queue._pull(queue.subscription, self.max_messages, wait)
                if received or time.monotonic() >= deadline:
                    self._messages = queue._as_queue_messages(received)
                    break
            if self._messages and self._on_arrival is not None:
                self._on_arrival(self._messages)
        except BaseException as exc:  # result() raises it
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> List[QueueMessage]:
        """The pull's messages (waits for it to end), held for ``visibility_timeout``."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        if not self._held:
            self._held = True
            self.queue._hold(self._messages, self.visibility_timeout)
        return self._messages

    def cancel(self) -> List[QueueMessage]:
        """Stop pulling (a pull under way ends within ``PULL_AHEAD_SLICE``); the messages it
        received anyway, for the caller to release."""
        self._cancelled = True
        self._done.wait()
        return [] if self._error is not None else self._messages


class _Puller:
    """The thread that makes a queue's receives started ahead, one after the other: one
    thread while receives keep coming, where a gRPC future would start one per pull. It
    ends after ``PULLER_IDLE`` seconds without one (the next starts it again)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: List[PendingPull] = []
        self._running = False

    def start(self, pending: PendingPull) -> PendingPull:
        with self._cond:
            self._waiting.append(pending)
            if self._running:
                self._cond.notify()
            else:
                self._running = True
                threading.Thread(target=self._run, name="wrencore-pubsub-puller",
                                 daemon=True).start()
        return pending

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._waiting:
                    self._cond.wait(PULLER_IDLE)
                if not self._waiting:
                    self._running = False
                    return
                pending = self._waiting.pop(0)
            pending._run()


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
        self._stubs_made: Optional[_Stubs] = None
        self._puller: Optional[_Puller] = None
        self._held: Dict[str, float] = {}   # ack id -> when its deadline ends (monotonic)
        self._last_pulled = 0
        self._monitoring: Any = None
        #: Monitoring's last answer (None: none) and when to ask again (monotonic).
        self._backlog: Optional[int] = None
        self._backlog_due = 0.0
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

    @property
    def _stubs(self) -> _Stubs:
        if self._stubs_made is None:
            stubs = _Stubs(self.subscriber, self.subscription)
            with self._lock:
                self._stubs_made = self._stubs_made or stubs
        return self._stubs_made

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
        return self._received(received, visibility_timeout)

    def start_receive(self, max_messages: int = 10, wait_time: float = 20.0,
                      visibility_timeout: Optional[float] = None,
                      on_arrival: Optional[Callable[[List[QueueMessage]], None]] = None
                      ) -> PendingPull:
        """One pull, started now and answered later: ``result()`` waits for its messages
        (none if ``wait_time`` passes first), ``cancel()`` gives up on it. ``on_arrival``
        is called with the messages in a gRPC thread as soon as they arrive."""
        self._stubs  # connected here, not in the puller's thread
        with self._lock:
            if self._puller is None:
                self._puller = _Puller()
        return self._puller.start(PendingPull(self, max_messages, wait_time,
                                              visibility_timeout, on_arrival))

    def _received(self, received: List[Any],
                  visibility_timeout: Optional[float]) -> List[QueueMessage]:
        """Pulled protobuf messages as QueueMessages, held for ``visibility_timeout``."""
        messages = self._as_queue_messages(received)
        self._hold(messages, visibility_timeout)
        return messages

    def _as_queue_messages(self, received: List[Any]) -> List[QueueMessage]:
        self._last_pulled = len(received)
        return [QueueMessage(message_id=m.message.message_id,
                             body=m.message.data.decode("utf-8", "replace"),
                             receipt=m.ack_id, receive_count=max(1, m.delivery_attempt))
                for m in received]

    def _hold(self, messages: List[QueueMessage], visibility_timeout: Optional[float]) -> None:
        """Note ``messages`` as held, for ``visibility_timeout`` seconds (None: the
        subscription's deadline; another is asked for)."""
        seconds = self.ack_deadline if visibility_timeout is None else visibility_timeout
        if messages and visibility_timeout is not None and int(seconds) != self.ack_deadline:
            self._modify(messages, seconds)
        with self._lock:
            until = time.monotonic() + seconds
            self._held.update((m.receipt, until) for m in messages)

    def _pull(self, subscription: str, max_messages: int, wait: float) -> List[Any]:
        stubs = self._stubs
        request = stubs.PullRequest(subscription=subscription,
                                    max_messages=max(1, int(max_messages)))
        metadata = stubs.metadata if subscription == self.subscription \
            else stubs.routing(subscription)
        try:
            response = stubs.pull(request, timeout=wait, metadata=metadata)
        except stubs.grpc.RpcError as exc:
            if exc.code() == stubs.grpc.StatusCode.DEADLINE_EXCEEDED:
                return []
            raise stubs.error(exc) from exc
        return list(response.received_messages)

    def _modify(self, messages: List[QueueMessage], seconds: float) -> None:
        ack_ids = [m.receipt for m in messages]
        seconds = 0 if seconds <= 0 else max(MIN_DEADLINE, min(MAX_DEADLINE, int(seconds)))
        stubs = self._stubs
        for start in range(0, len(ack_ids), ACK_BATCH):
            stubs.call(stubs.modify_ack_deadline, stubs.ModifyAckDeadlineRequest(
                subscription=self.subscription, ack_ids=ack_ids[start:start + ACK_BATCH],
                ack_deadline_seconds=seconds), stubs.metadata)
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
        stubs = self._stubs
        for start in range(0, len(ack_ids), ACK_BATCH):
            stubs.call(stubs.acknowledge, stubs.AcknowledgeRequest(
                subscription=self.subscription, ack_ids=ack_ids[start:start + ACK_BATCH]),
                stubs.metadata)
        with self._lock:
            for ack_id in ack_ids:
                self._held.pop(ack_id, None)

    def change_visibility(self, message: QueueMessage, timeout: float) -> None:
        """Extend (or with 0, end at once) the message's acknowledgement deadline."""
        self._modify([message], timeout)

    def depth(self) -> Dict[str, int]:
        """Messages waiting (the larger of Cloud Monitoring's backlog, when it can be read,
        and what this client's last pull returned) and those this client holds."""
        backlog = self.monitored_backlog()
        now = time.monotonic()
        with self._lock:
            for ack_id in [a for a, until in self._held.items() if until <= now]:
                del self._held[ack_id]
            return {"visible": max(self._last_pulled, backlog or 0),
                    "in_flight": len(self._held)}

    @property
    def monitoring(self) -> Any:
        """Cloud Monitoring's client, or None where there is none to ask (the emulator, or
        google-cloud-monitoring not installed)."""
        if os.environ.get("PUBSUB_EMULATOR_HOST"):
            return None
        with self._lock:
            if self._monitoring is None:
                try:
                    monitoring_v3 = importlib.import_module("google.cloud.monitoring_v3")
                except ImportError:
                    logger.info("google-cloud-monitoring is not installed: the queue's depth "
                                "is this client's view (pip install 'wrencore[gcp]')")
                    self._monitoring = False
                else:
                    try:
                        self._monitoring = monitoring_v3.MetricServiceClient()
                    except Exception as exc:  # e.g. no default credentials
                        logger.warning("no Cloud Monitoring client: the queue's depth is "
                                       "this client's view: %s", exc)
                        self._monitoring = False
            return self._monitoring or None

    def monitored_backlog(self) -> Optional[int]:
        """The subscription's undelivered messages per Cloud Monitoring (a minute or more
        old), or None when Monitoring cannot tell."""
        now = time.monotonic()
        if now < self._backlog_due:
            return self._backlog
        client = self.monitoring
        if client is None:
            return None
        subscription_id = self.subscription.rsplit("/", 1)[-1]
        try:
            series = client.list_time_series(
                request=backlog_request(self.project, subscription_id, time.time()),
                timeout=10)
            self._backlog, self._backlog_due = newest_backlog(series), now + BACKLOG_REFRESH
        except Exception as exc:  # no permission, no network: the client's view serves
            logger.warning("could not read the backlog of %s from Cloud Monitoring (grant "
                           "roles/monitoring.viewer to use it); using this worker's own view "
                           "for %.0f s: %s", self.subscription, BACKLOG_RETRY_AFTER, exc)
            self._backlog, self._backlog_due = None, now + BACKLOG_RETRY_AFTER
        return self._backlog

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
