"""A local worker process: a thin adapter between stdin/stdout frames and the JobRunner.

The protocol's pipes are moved off fds 0 and 1 first, so a call (or a C extension it uses)
that prints to stdout cannot corrupt them. Imports only the runtime.

Frames in:  ``("tasks", job, [call, ...])`` or ``("exit",)``; each call carries ``claim``,
            the name of its claim file in ``$WRENCORE_LOCAL_CLAIMS``.
Frames out: ``("ready", pid)``, then ``("done", claim, status, result_bytes)`` per call run,
            and ``("retire", reason)`` before exiting when the worker must be replaced.

A call is run only if this worker creates its claim file first; one already claimed was
taken by another worker and is skipped silently (see ``wrencore_local.backend``).
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


def _claim(directory: str, token: str) -> bool:
    try:
        os.close(os.open(os.path.join(directory, token), os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                         0o600))
    except FileExistsError:
        return False
    return True


def main() -> int:
    proto_in, proto_out = _claim_pipes()
    claims = os.environ["WRENCORE_LOCAL_CLAIMS"]
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
            if not _claim(claims, token):
                continue
            outcome = runner.run(job, call, store=False)
            write_frame(proto_out, ("done", token, outcome.status, outcome.result))
            os.unlink(os.path.join(claims, token))
            if runner.needs_replacement:
                write_frame(proto_out, ("retire", runner.needs_replacement))
                return 0


if __name__ == "__main__":
    sys.exit(main())
