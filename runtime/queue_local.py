"""A task queue in a directory, shared by any number of processes on one machine.

Every state change is one atomic ``os.rename``, so processes need no lock. A message is
a file whose name carries its state::

    ready/{id}.{receives}                   waiting
    inflight/{id}.{receives}.{deadline_ms}  received, invisible until the deadline
    dead/{id}.{receives}                    received ``max_receives`` times, never deleted

Receiving renames ``ready/…`` to ``inflight/…`` (one process wins); an in-flight message
whose deadline passed is renamed back to ``ready/``. The body is the file's content.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional

from .queues import QueueMessage, TaskQueue

_POLL = 0.02


def _now_ms() -> int:
    return int(time.time() * 1000)


class LocalQueue(TaskQueue):
    """Args:
        root: the queue's directory (created if missing).
        max_receives: receives before a message moves to ``dead/``.
        visibility_timeout: default seconds a received message stays invisible.
    """

    def __init__(self, root: str, max_receives: int = 3, visibility_timeout: float = 30.0) -> None:
        if int(max_receives) < 1:
            raise ValueError(f"max_receives must be at least 1, not {max_receives!r}")
        self.root = os.path.abspath(os.path.expanduser(root))
        self.max_receives = int(max_receives)
        self.visibility_timeout = float(visibility_timeout)
        self.config: Dict[str, Any] = {"root": self.root, "max_receives": self.max_receives,
                                       "visibility_timeout": self.visibility_timeout}
        for sub in ("ready", "inflight", "dead", "tmp"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)

    def _dir(self, sub: str) -> str:
        return os.path.join(self.root, sub)

    def _list(self, sub: str) -> List[str]:
        try:
            return sorted(os.listdir(self._dir(sub)))
        except FileNotFoundError:
            return []

    def send_batch(self, bodies: List[str]) -> None:
        for body in bodies:
            message_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
            fd, tmp = tempfile.mkstemp(dir=self._dir("tmp"))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
            os.rename(tmp, os.path.join(self._dir("ready"), f"{message_id}.0"))

    def _requeue_expired(self) -> None:
        now = _now_ms()
        for name in self._list("inflight"):
            message_id, receives, deadline = name.rsplit(".", 2)
            if int(deadline) <= now:
                try:
                    os.rename(os.path.join(self._dir("inflight"), name),
                              os.path.join(self._dir("ready"), f"{message_id}.{receives}"))
                except FileNotFoundError:
                    pass  # deleted, extended or requeued by another process meanwhile

    def _claim(self, name: str, visibility: float) -> Optional[QueueMessage]:
        message_id, receives = name.rsplit(".", 1)
        count = int(receives) + 1
        source = os.path.join(self._dir("ready"), name)
        if count > self.max_receives:
            try:
                os.rename(source, os.path.join(self._dir("dead"), f"{message_id}.{receives}"))
            except FileNotFoundError:
                pass
            return None
        target = os.path.join(self._dir("inflight"),
                              f"{message_id}.{count}.{_now_ms() + int(visibility * 1000)}")
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None  # another process claimed it
        with open(target, encoding="utf-8") as f:
            body = f.read()
        return QueueMessage(message_id=message_id, body=body, receipt=f"{message_id}.{count}",
                            receive_count=count)

    def receive(self, max_messages: int = 10, wait_time: float = 20.0,
                visibility_timeout: Optional[float] = None) -> List[QueueMessage]:
        visibility = self.visibility_timeout if visibility_timeout is None else visibility_timeout
        deadline = time.monotonic() + wait_time
        while True:
            self._requeue_expired()
            messages: List[QueueMessage] = []
            for name in self._list("ready"):
                message = self._claim(name, visibility)
                if message is not None:
                    messages.append(message)
                    if len(messages) >= max_messages:
                        break
            if messages or time.monotonic() >= deadline:
                return messages
            time.sleep(_POLL)

    def _find_inflight(self, message: QueueMessage) -> Optional[str]:
        prefix = message.receipt + "."
        for name in self._list("inflight"):
            if name.startswith(prefix):
                return name
        return None

    def delete(self, message: QueueMessage) -> None:
        name = self._find_inflight(message)
        if name is not None:
            try:
                os.unlink(os.path.join(self._dir("inflight"), name))
            except FileNotFoundError:
                pass

    def change_visibility(self, message: QueueMessage, timeout: float) -> None:
        name = self._find_inflight(message)
        if name is None:
            return  # expired and taken back: like a stale SQS receipt, nothing to extend
        target = f"{message.receipt}.{_now_ms() + int(timeout * 1000)}"
        try:
            os.rename(os.path.join(self._dir("inflight"), name),
                      os.path.join(self._dir("inflight"), target))
        except FileNotFoundError:
            pass

    def depth(self) -> Dict[str, int]:
        self._requeue_expired()
        return {"visible": len(self._list("ready")), "in_flight": len(self._list("inflight"))}

    def purge(self) -> None:
        for sub in ("ready", "inflight", "dead"):
            for name in self._list(sub):
                try:
                    os.unlink(os.path.join(self._dir(sub), name))
                except FileNotFoundError:
                    pass

    def dead_letters(self) -> List[QueueMessage]:
        messages = []
        for name in self._list("dead"):
            message_id, receives = name.rsplit(".", 1)
            try:
                with open(os.path.join(self._dir("dead"), name), encoding="utf-8") as f:
                    body = f.read()
            except FileNotFoundError:
                continue
            messages.append(QueueMessage(message_id, body, name, int(receives)))
        return messages
