"""A local worker process: a thin adapter between stdin/stdout frames and the JobRunner.

The protocol's pipes are moved off fds 0 and 1 first, so a call (or a C extension it uses)
that prints to stdout cannot corrupt them. Imports only the runtime.

Frames in:  ``("tasks", job, [call, ...])`` or ``("exit",)``; each call carries ``claim``,
            its slot in this worker's claim file ``$WRENCORE_LOCAL_CLAIMS``.
Frames out: ``("ready", pid)``, then ``("done", claim, status, result_bytes)`` per call run,
            and ``("retire", reason)`` before exiting when the worker must be replaced.

A call is run only if this worker marks its claim slot first; one already marked was
taken by another worker and is skipped silently (see ``wrencore_local.claims``).
"""

from __future__ import annotations

import os
import sys

from wrencore_runtime.runner import JobRunner

from .claims import ClaimSlots
from .framing import read_frame, write_frame


def _claim_pipes():
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def main() -> int:
    proto_in, proto_out = _claim_pipes()
    claims = ClaimSlots(os.environ["WRENCORE_LOCAL_CLAIMS"])
    runner = JobRunner(worker_id=os.environ.get("WRENCORE_WORKER_ID", ""))
    write_frame(proto_out, ("ready", os.getpid()))
    while True:
        try:
            message = read_frame(proto_in)
        except EOFError:
            return 0
        if message[0] == "exit":
            return 0
        _, job, calls = message
        for call in calls:
            token = call["claim"]
            if not claims.claim(token):
                continue
            outcome = runner.run(job, call, store=False)
            write_frame(proto_out, ("done", token, outcome.status, outcome.result))
            if runner.needs_replacement:
                write_frame(proto_out, ("retire", runner.needs_replacement))
                return 0


if __name__ == "__main__":
    sys.exit(main())
