"""A local worker process: a thin adapter between stdin/stdout frames and the JobRunner.

The protocol's pipes are moved off fds 0 and 1 first, so a call (or a C extension it uses)
that prints to stdout cannot corrupt them. Imports only the runtime.

Frames in:  ``("tasks", job, [call, ...])`` or ``("exit",)``
Frames out: ``("ready", pid)``, then ``("done", call_id, status, result_bytes)`` per call.
"""

from __future__ import annotations

import os
import sys

from wrencore_runtime.runner import JobRunner

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
            outcome = runner.run(job, call, store=False)
            write_frame(proto_out, ("done", call["call_id"], outcome.status, outcome.result))


if __name__ == "__main__":
    sys.exit(main())
