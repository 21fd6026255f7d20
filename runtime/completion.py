"""Publishing call outcomes to the client's completion channel (worker side).

A job whose client listens on a channel carries its address in ``job["completion"]``
(``{"kind": "sqs", "url": …, "region": …}``). After a worker has written an outcome to
storage — which stays the durable record — it also sends the outcome to that channel, so
the client learns of finished calls without listing the job's keys. The message body has
the shape of a batch status::

    {"job_id": …, "statuses": [status, …], "results": {call_id: pickled result, …}}

or, when that would not fit in one message, names the objects to read instead::

    {"job_id": …, "keys": ["{job_id}/{call_id}/status.json" or a batch status key]}

Publishing is best effort: a message that cannot be sent is logged and the client finds the
outcome in storage (its fallback). Nothing here imports the client.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional

from .protocol import encode_json

logger = logging.getLogger(__name__)

#: SQS takes message bodies up to 256 KiB; keep a margin.
SQS_BODY_LIMIT = 250 * 1024

_clients: Dict[Any, Any] = {}
_clients_lock = threading.Lock()


def _sqs_client(region: Optional[str]) -> Any:
    with _clients_lock:
        client = _clients.get(region)
        if client is None:
            import boto3
            from botocore.config import Config

            client = _clients[region] = boto3.session.Session().client(
                "sqs", region_name=region or None,
                config=Config(retries={"mode": "standard", "max_attempts": 5}))
        return client


def publish(job: Dict[str, Any], statuses: List[Dict[str, Any]],
            results: Optional[Dict[str, bytes]], key: str) -> bool:
    """Tell the job's client that ``statuses`` (stored under ``key``) are written.

    Returns False when the job has no channel or the message could not be sent.
    """
    channel = job.get("completion")
    if not channel or not statuses:
        return False
    body = encode_json({"job_id": job["job_id"], "statuses": statuses,
                        "results": results or {}})
    if len(body) > SQS_BODY_LIMIT:
        body = encode_json({"job_id": job["job_id"], "keys": [key]})
    try:
        if channel.get("kind") != "sqs":
            raise ValueError(f"unknown completion channel kind {channel.get('kind')!r}")
        _sqs_client(channel.get("region")).send_message(QueueUrl=channel["url"],
                                                        MessageBody=body)
    except Exception as exc:  # the client reads the outcome from storage instead
        logger.warning("could not publish the outcome of calls %s of job %s: %s",
                       [s.get("call_id") for s in statuses], job["job_id"], exc)
        return False
    return True
