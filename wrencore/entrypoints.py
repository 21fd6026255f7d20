"""The ``wrencore`` entry points, remembered between processes.

Finding entry points through :mod:`importlib.metadata` imports it (and ``email``, ``zipfile``,
``csv``...) and reads the metadata of every installed distribution: most of the time a new
process takes to build its first executor. This module keeps the entry points found, with a
fingerprint of everything that discovery read, in a file under the user cache directory;
a process whose fingerprint matches loads its plugins from that list instead.

The fingerprint is cheap (one ``os.scandir`` per ``sys.path`` directory and one ``os.stat``
per distribution) and covers all that :mod:`importlib.metadata` would look at:

* ``sys.path`` itself, each entry resolved (a ``.pth`` or ``PYTHONPATH`` change changes it)
  and ``sys.executable`` and the Python version;
* for each ``sys.path`` directory, the names of the ``*.dist-info``, ``*.egg-info`` and
  ``*.egg`` entries in it (installing, upgrading or removing a distribution, editable or
  not, adds or removes one), and for each the ``stat`` of its ``entry_points.txt`` (a
  rewrite in place, as ``setup.py develop`` does to an ``egg-info``, changes it);
* for each ``sys.path`` file (a zip), its ``stat``.

A fingerprint that includes a time stamp less than two seconds old is not saved (a change
within the same clock tick would otherwise go unnoticed), and discovery is always used when
an import hook other than the standard path finder can find distributions. If loading a
remembered entry point fails to import, the list is thrown away and discovery runs again.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import sys
import time
from typing import List, Optional, Tuple

logger = logging.getLogger(__name__)

#: (entry-point name, value, distribution's metadata directory) in :func:`importlib.metadata.distributions` order.
EntryPoint = Tuple[str, str, str]
FORMAT = 1
#: A fingerprint with a time stamp newer than this many seconds is not trusted.
SETTLE_SECONDS = 2.0
_META_SUFFIXES = (".dist-info", ".egg-info", ".egg")


def cache_root() -> str:
    """wrencore's cache directory (``WRENCORE_CACHE``, else ``$XDG_CACHE_HOME/wrencore``)."""
    return os.environ.get("WRENCORE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wrencore")


def _stat(path: str) -> Optional[Tuple[int, int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def fingerprint() -> Optional[tuple]:
    """What entry-point discovery depends on, or None when it cannot be fingerprinted."""
    for finder in sys.meta_path:
        if hasattr(finder, "find_distributions") and getattr(finder, "__name__", "") != "PathFinder":
            return None  # a custom finder may find distributions anywhere
    entries = []
    for entry in sys.path:
        if not isinstance(entry, str):
            return None
        path = os.path.abspath(entry or ".")
        try:
            with os.scandir(path) as it:
                names = sorted(e.name for e in it if e.name.lower().endswith(_META_SUFFIXES))
        except NotADirectoryError:
            entries.append((entry, path, "file", _stat(path)))
            continue
        except OSError:
            entries.append((entry, path, "missing", None))
            continue
        metas = []
        for name in names:
            meta = os.path.join(path, name)
            if name.lower().endswith(".egg"):
                points = os.path.join(meta, "EGG-INFO", "entry_points.txt")
            else:
                points = os.path.join(meta, "entry_points.txt")
            metas.append((name, _stat(meta) if os.path.isfile(meta) else None, _stat(points)))
        entries.append((entry, path, "dir", tuple(metas)))
    return (FORMAT, sys.executable, sys.version, tuple(entries))


def _newest(fp: tuple) -> int:
    newest = 0
    for _entry, _path, _kind, detail in fp[3]:
        stats = [detail] if _kind == "file" else (
            [s for _, a, b in detail for s in (a, b)] if _kind == "dir" else [])
        for st in stats:
            if st is not None:
                newest = max(newest, st[0], st[1])
    return newest


def cache_file() -> str:
    key = repr((FORMAT, sys.executable, sys.version,
                [os.path.abspath(p or ".") for p in sys.path if isinstance(p, str)]))
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(cache_root(), "entry-points", digest + ".marshal")


def discover(group: str) -> List[EntryPoint]:
    """The group's entry points, as ``pluggy.PluginManager.load_setuptools_entrypoints``
    finds them (the same distributions, in the same order)."""
    import importlib.metadata

    found = []
    for dist in list(importlib.metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group == group:
                # the directory's name, not the metadata's (parsing it costs milliseconds)
                found.append((ep.name, ep.value,
                              os.path.basename(str(getattr(dist, "_path", "")))))
    return found


def load_cached(group: str, fp: Optional[tuple]) -> Optional[List[EntryPoint]]:
    """The remembered entry points of the group, if the fingerprint still matches."""
    if fp is None:
        return None
    try:
        with open(cache_file(), "rb") as f:
            saved = marshal.load(f)
        if saved["fingerprint"] == fp:
            return [tuple(e) for e in saved["groups"][group]]  # type: ignore[misc]
    except (OSError, EOFError, ValueError, TypeError, KeyError):
        pass
    return None


def save(group: str, fp: Optional[tuple], points: List[EntryPoint]) -> bool:
    """Remember the group's entry points; False (nothing saved) if the fingerprint is too
    fresh to trust or the cache cannot be written."""
    if fp is None or _newest(fp) > time.time_ns() - int(SETTLE_SECONDS * 1e9):
        return False
    path = cache_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            marshal.dump({"fingerprint": fp, "groups": {group: points}}, f)
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        logger.debug("could not save the entry-point cache %s: %s", path, exc)
        return False
    return True


def forget() -> None:
    """Remove this interpreter's remembered entry points."""
    try:
        os.unlink(cache_file())
    except OSError:
        pass


def resolve(value: str):
    """The object an entry point's value (``module`` or ``module:attr.attr [extras]``) names."""
    import importlib

    module, _, attr = value.split("[", 1)[0].partition(":")
    obj = importlib.import_module(module.strip())
    for part in attr.strip().split(".") if attr.strip() else ():
        obj = getattr(obj, part)
    return obj
