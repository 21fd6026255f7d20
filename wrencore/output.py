"""A call's output as it happens: stdout, stderr and log records, streamed from the worker.

The local backend's workers send each write and log record of a running call at once;
:class:`LiveOutput` keeps them in order on the call's future (``Future.logs()`` reads it
while the call runs) and, when the user asked for it (``live_output=True``), echoes each
complete line to this console prefixed with the call id: stdout lines to ``sys.stdout``,
stderr lines and log records to ``sys.stderr``.
"""

from __future__ import annotations

import collections
import sys
import threading
from typing import Deque, List, Tuple

#: Characters of output kept per call on the user's computer (the newest).
KEEP_LIMIT = 1 << 20

_console_lock = threading.Lock()


class LiveOutput:
    """The output of one call received so far, in the order it was produced."""

    def __init__(self, label: str, echo: bool) -> None:
        self.label = label
        self.echo = echo
        self.chunks: Deque[Tuple[str, str]] = collections.deque()
        self._size = 0
        self._partial = {"stdout": "", "stderr": "", "log": ""}
        self._lock = threading.Lock()

    def add(self, stream: str, text: str) -> None:
        with self._lock:
            self.chunks.append((stream, text))
            self._size += len(text)
            while self._size > KEEP_LIMIT and len(self.chunks) > 1:
                self._size -= len(self.chunks.popleft()[1])
            if not self.echo:
                return
            lines = (self._partial.get(stream, "") + text).split("\n")
            self._partial[stream] = lines.pop()
        self._print(stream, lines)

    def text(self) -> str:
        with self._lock:
            return "".join(text for _, text in self.chunks)

    def flush(self) -> None:
        """Echo what is left of unfinished lines (the call ended)."""
        with self._lock:
            rests = [(s, [rest]) for s, rest in self._partial.items() if rest]
            self._partial = {s: "" for s in self._partial}
        for stream, lines in rests:
            self._print(stream, lines)

    def _print(self, stream: str, lines: List[str]) -> None:
        if not lines:
            return
        console = sys.stdout if stream == "stdout" else sys.stderr
        text = "".join(f"[{self.label}] {line}\n" for line in lines)
        with _console_lock:
            try:
                console.write(text)
                console.flush()
            except (OSError, ValueError):
                pass  # a closed console must not fail the call's bookkeeping
