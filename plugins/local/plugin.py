"""Registers the local backend, the local-filesystem storage and the local queue."""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping

from wrencore import hookimpl


def localfs_storage(section: Mapping[str, Any]):
    """``[localfs]``: ``root`` (default ``~/.cache/wrencore/storage``), ``max_age``
    (seconds a job's data is kept, default a week, 0 forever; see ``prune``)."""
    from wrencore_runtime.storage import LocalFileStorage

    from .prune import MAX_AGE, prune_in_background

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    storage = LocalFileStorage(section.get("root") or os.path.join(cache, "wrencore", "storage"))
    max_age = section.float("max_age", MAX_AGE, minimum=0) if hasattr(section, "float") \
        else float(section.get("max_age", MAX_AGE))
    prune_in_background(storage.root, max_age)
    return storage


@hookimpl
def wrencore_register_backends(register):
    register("local", "wrencore_local.backend:LocalBackend",
             description="worker processes on this computer; no configuration, no network")


@hookimpl
def wrencore_register_storages(register):
    register("localfs", localfs_storage, description="files under a local directory")


@hookimpl
def wrencore_register_queues(register):
    register("local", "wrencore_runtime.queue_local:LocalQueue",
             description="a directory-based queue shared by processes on this computer")


@hookimpl(trylast=True)
def wrencore_instance_id(config: Mapping[str, Any]):
    return socket.gethostname()
