"""Task messages: what a client sends a worker, whatever carries it.

A task message names one job and one or more of its calls::

    {"protocol": 1,
     "job": {"job_id": str,
             "storage": {"class": "module:Class", "config": {...}},
             "function_key": str,            # see layout.function_key
             "python": "3.11",                # client's major.minor
             "serializer": "cloudpickle 3.1.2",
             "timeout": float | None,         # per-call limit, seconds
             "extra_env": {str: str},         # set around each call
             "result_inline_limit": int},     # bigger results are staged in storage
     "calls": [{"call_id": str,
                "attempt": int,               # optional, 0; echoed in the call's status
                "args": bytes | None,         # pickled (args, kwargs), when small
                "args_key": str | None,       # else where they are staged
                "host_submit_timestamp": float}]}

Pipes carry it pickled; Lambda payloads and queue bodies carry it as JSON through
:func:`encode_json`, where bytes become ``{"__b64__": "..."}``. Messages carry references
into storage, never credentials.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any, Dict

import cloudpickle

from . import PROTOCOL_VERSION

SERIALIZER = f"cloudpickle {cloudpickle.__version__}"
PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__b64__": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and "__b64__" in obj:
            return base64.b64decode(obj["__b64__"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


from_jsonable = _from_jsonable


def encode_json(obj: Any) -> str:
    """JSON text of a message or status, with bytes base64-encoded."""
    return json.dumps(_to_jsonable(obj), separators=(",", ":"))


def decode_json(text: "str | bytes") -> Any:
    """Inverse of :func:`encode_json`."""
    return _from_jsonable(json.loads(text))


def make_message(job: Dict[str, Any], calls: list) -> Dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "job": job, "calls": list(calls)}


def version_mismatch(job: Dict[str, Any]) -> "str | None":
    """Say how this worker differs from the client that built ``job``, or None if it does not."""
    differences = []
    if job.get("python") != PYTHON:
        differences.append(f"Python {job.get('python')} on the client but {PYTHON} on the worker")
    if job.get("serializer") != SERIALIZER:
        differences.append(f"{job.get('serializer')} on the client but {SERIALIZER} on the worker")
    if not differences:
        return None
    return "; ".join(differences)
