"""The task-queue interface pulled by standalone workers.

A queue carries task-message bodies (JSON text from ``protocol.encode_json``; they hold
references into storage, never unbounded pickles). Delivery is at-least-once: a received
message stays invisible for its visibility timeout and comes back if not deleted, with its
``receive_count`` increased; after ``max_receives`` it goes to the dead-letter queue.

Queues travel to workers as specs, like storages: ``{"class": "module:Class",
"config": {...}}``, rebuilt with :func:`queue_from_spec`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from . import spec_class


@dataclass
class QueueMessage:
    message_id: str
    body: str
    #: Opaque handle for delete/change_visibility (an SQS receipt handle, a file name …).
    receipt: str
    #: How many times this message has been received, this time included.
    receive_count: int = 1


class TaskQueue(abc.ABC):
    #: Configuration that rebuilds an equal queue on a worker (JSON-serializable).
    config: Dict[str, Any]

    @abc.abstractmethod
    def send_batch(self, bodies: List[str]) -> None:
        """Enqueue message bodies (any number; the queue splits them into its own batches)."""

    @abc.abstractmethod
    def receive(self, max_messages: int = 10, wait_time: float = 20.0,
                visibility_timeout: Optional[float] = None) -> List[QueueMessage]:
        """Long-poll up to ``max_messages``; return [] if none arrived within ``wait_time``."""

    def start_receive(self, max_messages: int = 10, wait_time: float = 20.0,
                      visibility_timeout: Optional[float] = None,
                      on_arrival: Optional[Callable[[List[QueueMessage]], None]] = None
                      ) -> "PendingReceive":
        """A receive asked for ahead of need, so that it overlaps the caller's work: its
        ``result()`` is what :meth:`receive` returns, ``cancel()`` gives it up (returning
        the messages it received anyway, for the caller to release), and ``on_arrival``,
        if given, is called with its messages once they are received (in whatever thread
        receives them). This default receives only when ``result()`` is called; queues that
        can receive in the background return their own."""
        return PendingReceive(self, max_messages, wait_time, visibility_timeout, on_arrival)

    @abc.abstractmethod
    def delete(self, message: QueueMessage) -> None:
        """Remove a received message for good."""

    def delete_many(self, messages: List[QueueMessage]) -> None:
        """Remove several received messages (queues with batch deletes override this)."""
        for message in messages:
            self.delete(message)

    @abc.abstractmethod
    def change_visibility(self, message: QueueMessage, timeout: float) -> None:
        """Keep a received message invisible for ``timeout`` more seconds (heartbeat)."""

    @abc.abstractmethod
    def depth(self) -> Dict[str, int]:
        """Approximate counts: ``{"visible": n, "in_flight": m}``."""

    @abc.abstractmethod
    def purge(self) -> None:
        """Delete every message."""

    def dead_letters(self) -> List[QueueMessage]:
        """Messages moved to the dead-letter queue (peek; empty if not supported)."""
        return []

    def to_spec(self) -> Dict[str, Any]:
        cls = type(self)
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "config": dict(self.config)}


class PendingReceive:
    """A receive made when its result is asked for (see :meth:`TaskQueue.start_receive`)."""

    def __init__(self, queue: TaskQueue, max_messages: int, wait_time: float,
                 visibility_timeout: Optional[float],
                 on_arrival: Optional[Callable[[List[QueueMessage]], None]]) -> None:
        self._receive = lambda: queue.receive(max_messages, wait_time, visibility_timeout)
        self._on_arrival = on_arrival

    def result(self) -> List[QueueMessage]:
        messages = self._receive()
        if messages and self._on_arrival is not None:
            self._on_arrival(messages)
        return messages

    def cancel(self) -> List[QueueMessage]:
        return []


def queue_from_spec(spec: Dict[str, Any]) -> TaskQueue:
    return spec_class(spec)(**spec.get("config", {}))
