"""Read the outcomes workers stored for a job, whichever way they wrote them: a call's own
``status.json`` or a batch status of several calls (see ``wrencore_runtime.layout``)."""

from __future__ import annotations

from typing import Callable, Dict, Iterable

from wrencore_runtime import layout
from wrencore_runtime.protocol import decode_json


def stored_statuses(keys: Iterable[str], read: Callable[[str], bytes]) -> Dict[str, dict]:
    """``{call_id: status}`` of attempt 0 from the objects at ``keys``; an inline result is
    under the status's ``"result"`` either way."""
    statuses: Dict[str, dict] = {}
    for key in keys:
        parsed = layout.parse_status_key(key)
        if parsed and parsed[1] == 0:
            statuses[parsed[0]] = decode_json(read(key))
        elif layout.attempt_of_batch_status_key(key) == 0:
            batch = decode_json(read(key))
            for status in batch["statuses"]:
                if status.get("attempt", 0) == 0:
                    result = batch.get("results", {}).get(status["call_id"])
                    statuses[status["call_id"]] = dict(
                        status, **({"result": result} if result is not None else {}))
    return statuses
