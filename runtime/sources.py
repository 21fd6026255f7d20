"""Code that travels by value keeps its file name, line numbers and source lines.

A function pickled by value (defined in a script, a notebook cell or one of the user's own
modules) is rebuilt on the worker from its code object. How a serializer encodes code
objects is its own business: cloudpickle 3.1.3 renames every file to ``<dynamic-code>``.
So the client encodes code objects itself (``marshal``, exact for one Python minor version,
which the job header already requires) and sends the source lines each one spans. The
worker registers those lines with :mod:`linecache`, so a traceback formatted on the worker
shows the user's file, line and source even where that file does not exist.
"""

from __future__ import annotations

import linecache
import marshal
import threading
import types
from typing import Dict, List, Sequence

_lock = threading.Lock()
#: filename -> sparse list of source lines ("" where nothing was shipped).
_shipped: Dict[str, List[str]] = {}


def register_source(filename: str, first_line: int, lines: Sequence[str]) -> None:
    """Make ``lines`` (starting at line ``first_line``) of ``filename`` known to linecache."""
    if not lines or first_line < 1:
        return
    with _lock:
        known = _shipped.setdefault(filename, [])
        end = first_line - 1 + len(lines)
        if len(known) < end:
            known.extend([""] * (end - len(known)))
        known[first_line - 1:end] = lines
        # mtime None: linecache.checkcache never discards it, as for a module's __loader__.
        linecache.cache[filename] = (sum(map(len, known)), None, list(known), filename)


def load_code(data: bytes, filename: str, first_line: int,
              lines: Sequence[str]) -> types.CodeType:
    """Rebuild a code object the client encoded, and register the source it spans."""
    register_source(filename, first_line, lines)
    return marshal.loads(data)
