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
import re
import sys

from . import PROTOCOL_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def installed_serializer() -> str:
    """``"cloudpickle <version>"`` of this environment (``SERIALIZER``).

    A worker reads the version from the package's ``__init__.py`` when cloudpickle is not
    imported yet: a function sent by value needs no cloudpickle on the worker (see
    ``wrencore_runtime.sources``), and its import would cost a new worker more than the
    rest of its start.
    """
    global _serializer
    if _serializer is None:
        _serializer = _read_serializer()
    return _serializer


_serializer: "str | None" = None


def _read_serializer() -> str:
    module = sys.modules.get("cloudpickle")
    if module is None:
        try:
            import importlib.util

            spec = importlib.util.find_spec("cloudpickle")
            with open(spec.origin, encoding="utf-8") as f:  # type: ignore[union-attr,arg-type]
                found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", f.read(), re.M)
            if found:
                return f"cloudpickle {found.group(1)}"
        except Exception:  # an unusual install: ask the module itself
            pass
        import cloudpickle as module
    return f"cloudpickle {module.__version__}"


def __getattr__(name: str) -> "Any":
    if name == "SERIALIZER":  # read when first asked for
        return installed_serializer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _bytes_to_jsonable(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__b64__": base64.b64encode(bytes(obj)).decode("ascii")}
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _jsonable_to_bytes(obj: Dict[str, Any]) -> Any:
    if len(obj) == 1 and "__b64__" in obj:
        return base64.b64decode(obj["__b64__"])
    return obj


# The json module's C code walks the objects; Python runs only for bytes (every message
# and status goes through here, on the worker's hot path). One encoder and one decoder
# for all: ``json.dumps``/``json.loads`` with options build new ones on every call.
_encode = json.JSONEncoder(separators=(",", ":"), default=_bytes_to_jsonable).encode
_decode = json.JSONDecoder(object_hook=_jsonable_to_bytes).decode


def encode_json(obj: Any) -> str:
    """JSON text of a message or status, with bytes base64-encoded."""
    return _encode(obj)


def decode_json(text: "str | bytes") -> Any:
    """Inverse of :func:`encode_json`."""
    if isinstance(text, str):
        return _decode(text)
    return json.loads(text, object_hook=_jsonable_to_bytes)  # detects the encoding


def make_message(job: Dict[str, Any], calls: list) -> Dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "job": job, "calls": list(calls)}


def version_mismatch(job: Dict[str, Any]) -> "str | None":
    """Say how this worker differs from the client that built ``job``, or None if it does not."""
    differences = []
    if job.get("python") != PYTHON:
        differences.append(f"Python {job.get('python')} on the client but {PYTHON} on the worker")
    serializer = installed_serializer()
    if job.get("serializer") != serializer:
        differences.append(f"{job.get('serializer')} on the client but {serializer} on the worker")
    if not differences:
        return None
    return "; ".join(differences)
