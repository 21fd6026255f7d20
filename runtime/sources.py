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
import sys
import threading
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Sequence, Tuple

_lock = threading.Lock()
#: filename -> sparse list of source lines ("" where nothing was shipped).
_shipped: "Dict[str, List[str]]" = {}


def register_source(filename: str, first_line: int, lines: "Sequence[str]") -> None:
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
              lines: "Sequence[str]") -> types.CodeType:
    """Rebuild a code object the client encoded, and register the source it spans."""
    register_source(filename, first_line, lines)
    return marshal.loads(data)


# -- functions sent by value, rebuilt without cloudpickle --------------------------------
# A function pickled by value names the functions that rebuild it. cloudpickle's own are in
# ``cloudpickle.cloudpickle``, whose import (with ``dataclasses``, ``inspect``, ``typing``,
# ``platform`` and ``uuid``) costs a new worker more than the rest of its start. The client
# (``wrencore.serialize``) names these instead: each does exactly what the cloudpickle
# function named beside it does (cloudpickle 3.1), so a worker rebuilds a plain function, a
# lambda or a closure with the standard library alone. Anything else sent by value (a
# class, an enum) still names cloudpickle's, which the unpickler imports when it meets them.


def make_function(code: types.CodeType, globals: "Dict[str, Any]", name: str,
                  argdefs: "Tuple[Any, ...] | None", closure: "Tuple[Any, ...] | None"
                  ) -> types.FunctionType:
    """As ``cloudpickle.cloudpickle._make_function``."""
    globals["__builtins__"] = __builtins__
    return types.FunctionType(code, globals, name, argdefs, closure)


def function_setstate(obj: types.FunctionType, state: "Tuple[Dict[str, Any], Dict[str, Any]]"
                      ) -> None:
    """As ``cloudpickle.cloudpickle._function_setstate``: globals and closure are read-only
    attributes, so they are filled in place."""
    state, slotstate = state  # type: ignore[assignment]
    obj.__dict__.update(state)
    obj_globals = slotstate.pop("__globals__")
    obj_closure = slotstate.pop("__closure__")
    slotstate.pop("_cloudpickle_submodules")  # only held the submodules while unpickling
    obj.__globals__.update(obj_globals)
    obj.__globals__["__builtins__"] = __builtins__
    if obj_closure is not None:
        for i, cell in enumerate(obj_closure):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            obj.__closure__[i].cell_contents = value  # type: ignore[index]
    for key, value in slotstate.items():
        setattr(obj, key, value)


def make_empty_cell() -> "types.CellType":
    """As ``cloudpickle.cloudpickle._make_empty_cell``."""
    if False:  # makes ``cell`` a free variable of the lambda, never assigned
        cell = None
    return (lambda: cell).__closure__[0]  # type: ignore[index]  # noqa: F821


def make_cell(value: "Any") -> "types.CellType":
    """As ``cloudpickle.cloudpickle._make_cell`` with a value."""
    cell = make_empty_cell()
    cell.cell_contents = value
    return cell


def subimport(name: str) -> types.ModuleType:
    """As ``cloudpickle.cloudpickle.subimport``: the module itself, also a submodule."""
    __import__(name)
    return sys.modules[name]
