"""Publishing call outcomes to the client's completion channel (worker side).

A job whose client listens on a channel carries the channel's spec in ``job["completion"]``,
``{"class": "module:Class", "config": {...}}`` like a storage spec: the class is a
:class:`CompletionSender` from the plugin that made the channel (``wrencore_aws.sqs``'s
``SqsCompletionSender`` for an SQS queue). After a worker has written an outcome to
storage — which stays the durable record — it also sends the outcome to that channel, so
the client learns of finished calls without listing the job's keys. The message body has
the shape of a batch status::

    {"job_id": …, "statuses": [status, …], "results": {call_id: pickled result, …}}

or, when that would not fit in one message (the sender's ``body_limit``), names the
objects to read instead::

    {"job_id": …, "keys": ["{job_id}/{call_id}/status.json" or a batch status key]}

Publishing is best effort: a message that cannot be sent is logged and the client finds the
outcome in storage (its fallback). Nothing here imports the client or a cloud SDK.
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import Any, Dict, List, Optional, Tuple

from . import spec_class
from .errors import WrenError
from .protocol import encode_json

logger = logging.getLogger(__name__)


class CompletionSender(abc.ABC):
    """Sends message bodies to one completion channel; built from the channel's spec
    config (keyword arguments), once per worker process and channel."""

    #: The largest body the channel takes (bytes); larger outcomes are sent as keys.
    body_limit: int = 250 * 1024

    @abc.abstractmethod
    def send(self, body: str) -> None:
        """Send one message; raise on failure (the caller logs it)."""


_senders: Dict[Tuple[str, str], CompletionSender] = {}
_senders_lock = threading.Lock()


def sender_from_spec(spec: Dict[str, Any]) -> CompletionSender:
    """The sender for a channel spec, made once per process and channel."""
    config = spec.get("config") or {}
    cache_key = (str(spec.get("class")), encode_json(config))
    with _senders_lock:
        sender = _senders.get(cache_key)
        if sender is None:
            module_name, _, qualname = str(spec.get("class") or "").partition(":")
            if not module_name or not qualname:
                raise WrenError(f"a completion channel spec names no class: {spec!r}")
            obj = spec_class(spec)
            if not (isinstance(obj, type) and issubclass(obj, CompletionSender)):
                raise WrenError(f"{spec['class']} is not a wrencore CompletionSender")
            sender = _senders[cache_key] = obj(**config)
        return sender


def publish(job: Dict[str, Any], statuses: List[Dict[str, Any]],
            results: Optional[Dict[str, bytes]], key: str) -> bool:
    """Tell the job's client that ``statuses`` (stored under ``key``) are written.

    Returns False when the job has no channel or the message could not be sent.
    """
    channel = job.get("completion")
    if not channel or not statuses:
        return False
    try:
        sender = sender_from_spec(channel)
        body = encode_json({"job_id": job["job_id"], "statuses": statuses,
                            "results": results or {}})
        if len(body) > sender.body_limit:
            body = encode_json({"job_id": job["job_id"], "keys": [key]})
        sender.send(body)
    except Exception as exc:  # the client reads the outcome from storage instead
        logger.warning("could not publish the outcome of calls %s of job %s: %s",
                       [s.get("call_id") for s in statuses], job["job_id"], exc)
        return False
    return True
