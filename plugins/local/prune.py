"""Keeps the local storage from growing without bound: old jobs' data is deleted.

``[localfs] max_age`` (seconds, default a week; 0 keeps everything) is how long a job's
directory is kept after it was last written. The first time a process opens a
local-filesystem storage root, a background thread deletes the job directories under it
older than that. Only directories named like job ids are touched: runtimes and anything
else under the root are left alone, and nothing is written there to remember it.

Scanning a root that holds thousands of jobs costs tens of milliseconds of the new process's
CPU, while it starts its first calls; so a root is scanned at most once every
``PRUNE_INTERVAL`` seconds (or ``max_age``, if shorter) by all processes together: the
time of the last scan is kept as the modification time of a stamp file under wrencore's
cache directory (``$WRENCORE_CACHE``, else ``~/.cache/wrencore``), one per root.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
from typing import Optional, Set

logger = logging.getLogger(__name__)

#: Default of ``[localfs] max_age``: a week.
MAX_AGE = 7 * 24 * 3600
#: Longest time between two scans of one root (by any process).
PRUNE_INTERVAL = 3600.0
_pruned_roots: Set[str] = set()
_pruned_lock = threading.Lock()
JOB_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}-\d+$")


def _last_written(path: str) -> float:
    """The newest modification time of a job directory and its entries (not deeper)."""
    newest = os.stat(path).st_mtime
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def prune_jobs(root: str, max_age: float, now: Optional[float] = None) -> int:
    """Delete the job directories under ``root`` last written more than ``max_age``
    seconds ago; return how many were deleted."""
    now = time.time() if now is None else now
    deleted = 0
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not JOB_ID.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if now - _last_written(entry.path) <= max_age:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        deleted += 1
    if deleted:
        logger.info("deleted %d local jobs older than %g s from %s", deleted, max_age, root)
    return deleted


def _stamp_path(root: str) -> str:
    from wrencore.entrypoints import cache_root

    digest = hashlib.sha256(os.path.abspath(root).encode("utf-8", "surrogateescape"))
    return os.path.join(cache_root(), "pruned", digest.hexdigest()[:32])


def _scanned_recently(root: str, max_age: float) -> bool:
    """Whether a process scanned ``root`` within the interval; if not, note that this one
    does now (a stamp that cannot be written never stops a scan)."""
    stamp = _stamp_path(root)
    now = time.time()
    try:
        if now - os.stat(stamp).st_mtime < min(PRUNE_INTERVAL, max_age):
            return True
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        with open(stamp, "a"):
            pass
        os.utime(stamp, (now, now))
    except OSError as exc:
        logger.debug("cannot note the prune of %s in %s: %s", root, stamp, exc)
    return False


def prune_in_background(root: str, max_age: float) -> Optional[threading.Thread]:
    """Start pruning ``root`` unless this process did already, or any process did within
    ``PRUNE_INTERVAL`` seconds (or ``max_age``, if shorter), or ``max_age`` is 0; return the
    thread, if one was started."""
    if max_age <= 0:
        return None
    with _pruned_lock:
        if root in _pruned_roots:
            return None
        _pruned_roots.add(root)
    if _scanned_recently(root, max_age):
        return None
    thread = threading.Thread(target=prune_jobs, args=(root, max_age), daemon=True,
                              name="wrencore-localfs-prune")
    thread.start()
    return thread
