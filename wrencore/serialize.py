"""Pickling a job's function (with the user's local modules) and its calls' arguments."""

from __future__ import annotations

import contextlib
import dis
import hashlib
import io
import linecache
import logging
import marshal
import os
import pickle
import site
import sys
import sysconfig
import threading
import types
import zipfile
from collections import ChainMap
from typing import Any, Dict, Iterable, List, Optional, Tuple

import cloudpickle
import cloudpickle.cloudpickle as _cloudpickle
from wrencore_runtime import sources
from wrencore_runtime.runner import is_plain
from wrencore_runtime.sources import load_code

from .errors import SerializationError

logger = logging.getLogger(__name__)

#: A module bundle larger than this is refused: it almost certainly swept up data.
MODULE_BUNDLE_LIMIT = 64 * 1024 * 1024
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", "node_modules", ".pytest_cache"}


_installed_cache: Tuple[Any, List[str]] = (None, [])


def _installed_roots() -> List[str]:
    """:func:`_find_installed_roots`, found again only when ``sys.path`` changed."""
    global _installed_cache
    key = tuple(sys.path)
    cached_key, roots = _installed_cache
    if key != cached_key:
        roots = _find_installed_roots()
        _installed_cache = (key, roots)
    return roots


def _find_installed_roots() -> List[str]:
    roots = set()
    for path in getattr(site, "getsitepackages", lambda: [])() + [site.getusersitepackages()]:
        roots.add(path)
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix):
        roots.add(os.path.join(path, "lib"))
    roots.update(path for path in sys.path if _holds_installed_distributions(path))
    return [os.path.realpath(r) + os.sep for r in roots if r]


_scheme_roots: Optional[List[str]] = None


def _install_scheme_roots() -> List[str]:
    """The install scheme's directories (stdlib, purelib, platlib): read only for a module
    outside :func:`_installed_roots`, which nearly always cover them already (reading the
    scheme imports :mod:`sysconfig`'s data, a millisecond of a new process's first submit)."""
    global _scheme_roots
    if _scheme_roots is None:
        paths = sysconfig.get_paths()
        found = {paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
        _scheme_roots = [os.path.realpath(p) + os.sep for p in found if p]
    return _scheme_roots


def _holds_installed_distributions(path: str) -> bool:
    """True for a directory an installer wrote into (``pip install --target``, a layer)."""
    try:
        return any(name.endswith(".dist-info") for name in os.listdir(path or "."))
    except OSError:
        return False


_roots_cache: Tuple[Any, Dict[str, str]] = (None, {})


def _cached_local_module_roots() -> Dict[str, str]:
    """:func:`local_module_roots` of ``sys.modules``, recomputed only when it changed.

    ``sys.modules`` keeps insertion order, so its size and newest name change whenever a
    module is imported; checking them costs nothing, scanning every module does.
    """
    global _roots_cache
    modules = sys.modules
    key = (len(modules), next(reversed(modules.keys()), None))
    cached_key, roots = _roots_cache
    if key != cached_key:
        roots = local_module_roots()
        _roots_cache = (key, roots)
    return dict(roots)


#: Directory -> its real path, kept for the process: a module directory's symlinks do not
#: change while its modules are imported (a module file's own link is checked every time).
_real_dirs: Dict[str, str] = {}


def local_module_roots(modules: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Top-level names of imported modules that live outside any installed location.

    Returns ``{top_level_name: path}`` where path is the module file or package directory.
    These are the user's own modules (a ``helper.py`` beside the script, a package in the
    project tree) that a worker cannot be assumed to have.
    """
    modules = dict(sys.modules if modules is None else modules)
    installed = _installed_roots()
    found: Dict[str, str] = {}
    real_dirs = _real_dirs  # hundreds of modules live in a few dozen directories

    def realpath(filename: str) -> str:
        """``os.path.realpath(filename)``, resolving each directory once."""
        directory, base = os.path.split(filename)
        real_dir = real_dirs.get(directory)
        if real_dir is None:
            real_dir = real_dirs[directory] = os.path.realpath(directory)
        path = os.path.join(real_dir, base)
        return os.path.realpath(path) if os.path.islink(path) else path

    for name, module in modules.items():
        top = name.partition(".")[0]
        if top in found or top.startswith("wrencore") or name == "__main__" or top == "__mp_main__":
            continue
        filename = getattr(module, "__file__", None)
        if not filename or not filename.endswith((".py", ".pyc")):
            continue
        real = realpath(filename)
        if any(real.startswith(root) for root in installed) or \
                any(real.startswith(root) for root in _install_scheme_roots()):
            continue
        top_module = modules.get(top)
        top_file = getattr(top_module, "__file__", None) if top_module else None
        if not top_file:
            continue
        top_real = realpath(top_file)
        if os.path.basename(top_real) == "__init__.py":
            found[top] = os.path.dirname(top_real)
        else:
            found[top] = top_real
    return found


def _iter_files(name: str, path: str) -> Iterable[Tuple[str, str]]:
    if os.path.isfile(path):
        yield path, os.path.basename(path)
        return
    for dirpath, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for fname in sorted(files):
            if fname.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(dirpath, fname)
            yield full, os.path.join(name, os.path.relpath(full, path))


def build_module_bundle(roots: Dict[str, str]) -> Tuple[Optional[bytes], Optional[str]]:
    """A deterministic zip of the given modules, and its content hash."""
    if not roots:
        return None, None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(roots):
            for full, arcname in _iter_files(name, roots[name]):
                info = zipfile.ZipInfo(arcname.replace(os.sep, "/"), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as f:
                    archive.writestr(info, f.read())
    data = buffer.getvalue()
    if len(data) > MODULE_BUNDLE_LIMIT:
        raise SerializationError(
            f"the local modules to ship ({', '.join(sorted(roots))}) make a "
            f"{len(data) >> 20} MiB bundle; move data files out of the code directories"
        )
    return data, hashlib.sha256(data).hexdigest()[:32]


class _BundleCache:
    """Rebuilds the module bundle only when the set of local modules or their files change."""

    def __init__(self) -> None:
        self._key: Any = None
        self._value: Tuple[Optional[bytes], Optional[str]] = (None, None)

    def get(self) -> Tuple[Optional[bytes], Optional[str]]:
        roots = _cached_local_module_roots()
        key = []
        for name, path in sorted(roots.items()):
            for full, _ in _iter_files(name, path):
                try:
                    st = os.stat(full)
                except OSError:
                    continue
                key.append((full, st.st_mtime_ns, st.st_size))
        key_t = tuple(key)
        if key_t != self._key:
            self._value = build_module_bundle(roots)
            self._key = key_t
            if roots:
                logger.debug("shipping local modules: %s", ", ".join(sorted(roots)))
        return self._value


_bundles = _BundleCache()
_by_value_lock = threading.RLock()


@contextlib.contextmanager
def local_modules_by_value():
    """Pickle objects of the user's local modules by value while the block runs.

    A worker need not be able to import those modules (or what they import, such as
    wrencore itself) to load a function or argument defined in them. Their source still
    travels in the job's module bundle, for imports the function makes at run time.
    Classes keep their identity: cloudpickle's class tracking maps a result's class back
    to the original one on this computer.
    """
    with _by_value_lock:
        registered = []
        for name in _cached_local_module_roots():
            module = sys.modules.get(name)
            if module is None:
                continue
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:
                continue
            registered.append(module)
        try:
            yield
        finally:
            for module in registered:
                cloudpickle.unregister_pickle_by_value(module)


def _line_span(code: types.CodeType) -> Tuple[int, int]:
    """First and last source line of ``code`` and the code objects nested in it."""
    first = last = code.co_firstlineno
    for _, line in dis.findlinestarts(code):
        if line is not None and line > last:
            last = line
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            last = max(last, _line_span(const)[1])
    return first, last


def _reduce_code(code: types.CodeType) -> Tuple[Any, Tuple[Any, ...]]:
    """Encode a code object with its real file name and the source lines it spans."""
    first, last = _line_span(code)
    lines = linecache.getlines(code.co_filename)[first - 1:last]
    return load_code, (marshal.dumps(code), code.co_filename, first, lines)


def _reduce_cell(cell: Any) -> Tuple[Any, Tuple[Any, ...]]:
    try:
        value = cell.cell_contents
    except ValueError:  # an empty cell
        return sources.make_empty_cell, ()
    return sources.make_cell, (value,)


def _reduce_module(module: types.ModuleType) -> Any:
    reduced = _cloudpickle._module_reduce(module)
    if reduced[0] is _cloudpickle.subimport:
        return (sources.subimport,) + tuple(reduced[1:])
    return reduced  # a module sent by value: cloudpickle's dynamic_subimport


#: cloudpickle's function rebuilders and the same in ``wrencore_runtime.sources``, which a
#: worker loads without importing cloudpickle (see there).
_SAME_REBUILDERS = {getattr(_cloudpickle, "_make_function", None): sources.make_function,
                    getattr(_cloudpickle, "_function_setstate", None): sources.function_setstate}


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, except that code objects keep their origin, and plain functions, cells
    and modules name rebuilders a worker has without cloudpickle (see
    ``wrencore_runtime.sources``)."""

    dispatch_table = ChainMap({types.CodeType: _reduce_code, types.CellType: _reduce_cell,
                               types.ModuleType: _reduce_module},
                              cloudpickle.Pickler.dispatch_table)

    def _dynamic_function_reduce(self, func: Any) -> Any:
        reduced = super()._dynamic_function_reduce(func)
        make, setstate = _SAME_REBUILDERS.get(reduced[0]), _SAME_REBUILDERS.get(reduced[5])
        if make is not sources.make_function or setstate is not sources.function_setstate:
            return reduced  # a cloudpickle whose rebuilders are not the ones mirrored
        return (make, reduced[1], reduced[2], reduced[3], reduced[4], setstate)


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` as cloudpickle does, keeping the origin of code that travels by value."""
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return buffer.getvalue()


def dumps_initializer(initializer: Any, initargs: tuple) -> bytes:
    """The executor's ``(initializer, initargs)``; wrap in :func:`local_modules_by_value`."""
    return dumps((initializer, initargs))


def dumps_function(func: Any, *, initializer: Optional[bytes] = None) -> bytes:
    """The function package a worker loads: local modules first, then the function.

    ``initializer`` (from :func:`dumps_initializer`) travels in the package, so every
    backend's worker finds it where it finds the function.
    """
    if not callable(func):
        raise TypeError(f"expected a callable, got {type(func).__name__}: {func!r}")
    try:
        with local_modules_by_value():
            function_bytes = dumps(func)
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle the function {getattr(func, '__qualname__', func)!r}: "
            f"{type(exc).__name__}: {exc}. Objects it references (globals, closures, "
            f"default arguments) must be picklable."
        ) from exc
    modules, modules_hash = _bundles.get()
    return pickle.dumps(
        {"modules": modules, "modules_hash": modules_hash, "function": function_bytes,
         "initializer": initializer},
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def dumps_args(args: tuple, kwargs: dict, call_id: str) -> bytes:
    """Pickle one call's arguments; wrap many calls in :func:`local_modules_by_value`.

    Plain data (numbers, strings, bytes and small containers of them) pickles the same
    with the standard pickler, which is an order of magnitude cheaper per call.
    """
    if is_plain(args) and (not kwargs or is_plain(kwargs)):
        return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        return dumps((args, kwargs))
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle the arguments of call {call_id}: {type(exc).__name__}: {exc}"
        ) from exc
