"""Counts a client's AWS requests by operation, with botocore's event hooks."""

from __future__ import annotations

import collections
import threading
from typing import Any, Iterable


class RequestCounter:
    """Attach to boto3 clients; ``counts[(service, operation)]`` is how many API calls each
    made (one per call, whatever botocore's retries)."""

    def __init__(self) -> None:
        self.counts: "collections.Counter[tuple]" = collections.Counter()
        self._lock = threading.Lock()
        self._attached: set = set()

    def attach(self, clients: Iterable[Any]) -> "RequestCounter":
        for client in clients:
            if client is None or id(client) in self._attached:
                continue
            self._attached.add(id(client))
            service = client.meta.service_model.service_name
            client.meta.events.register(
                "before-call", lambda model, _s=service, **_: self._count(_s, model.name))
        return self

    def _count(self, service: str, operation: str) -> None:
        with self._lock:
            self.counts[(service, operation)] += 1

    def snapshot(self) -> "collections.Counter[tuple]":
        with self._lock:
            return collections.Counter(self.counts)

    def of(self, operation: str) -> int:
        return sum(n for (_, op), n in self.snapshot().items() if op == operation)

    def total(self) -> int:
        return sum(self.snapshot().values())


def lambda_clients(executor: Any) -> list:
    """The clients an aws_lambda executor uses per call: Lambda, S3, its completion queue."""
    backend = executor.backend
    channel = getattr(backend, "_channel", None)
    return [backend.client, executor.storage.client, channel.client if channel else None]


def fleet_clients(executor: Any) -> list:
    """The clients an aws_sqs_ec2 executor uses per call: SQS (tasks, dead letters), EC2,
    S3 and its completion queue."""
    backend = executor.backend
    standalone = backend.standalone
    clients = [executor.storage.client, standalone.queue.client]
    provider = standalone.provider
    clients += [getattr(provider, name, None) for name in ("ec2", "_ec2", "client", "_client")]
    channel = getattr(backend, "channel", None)
    clients.append(channel.client if channel else None)
    return [c for c in clients if c is not None and hasattr(c, "meta")]
