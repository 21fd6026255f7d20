"""Registers the local backend, the local-filesystem storage and the local queue."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Mapping

from wrencore import hookimpl


def localfs_root(section: Mapping[str, Any]) -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return section.get("root") or os.path.join(cache, "wrencore", "storage")


def localfs_storage(section: Mapping[str, Any]):
    """``[localfs]``: ``root`` (default ``~/.cache/wrencore/storage``), ``max_age``
    (seconds a job's data is kept, default a week, 0 forever; see ``prune``)."""
    from wrencore_runtime.storage import LocalFileStorage

    from .prune import MAX_AGE, prune_in_background

    storage = LocalFileStorage(localfs_root(section))
    max_age = section.float("max_age", MAX_AGE, minimum=0) if hasattr(section, "float") \
        else float(section.get("max_age", MAX_AGE))
    prune_in_background(storage.root, max_age)
    return storage


@hookimpl
def wrencore_register_settings(register):
    from wrencore.settings import Setting

    register("local", [
        Setting("workers", "int", None, "Worker processes; unset: one per core.", minimum=1),
        Setting("python", "str", None, "The interpreter workers run; unset: the client's own."),
        Setting("max_tasks_per_child", "int", None, "Calls a worker runs before it is "
                "replaced; unset: no limit.", minimum=1),
        Setting("fork_server", "bool", True, "Fork workers from a warm interpreter started "
                "once per client process (a worker starts in milliseconds); false: start "
                "each worker as a new interpreter. Only for the client's own interpreter."),
        Setting("args_inline_limit", "int", 16 * 1024 * 1024, "Bytes of arguments sent "
                "with the call; larger ones go through storage.", minimum=0),
        Setting("result_inline_limit", "int", 16 * 1024 * 1024, "Bytes of a result sent "
                "back directly; larger ones go through storage.", minimum=0),
        Setting("env_dir", "str", None, "Where isolated runtime environments are built; "
                "unset: under `~/.cache/wrencore/envs`."),
        Setting("env_max_age", "float", 7 * 24 * 3600.0, "Seconds an unused isolated "
                "environment is kept.", minimum=0),
        Setting("env_max_bytes", "int", 5 * 1024 ** 3, "Bytes of isolated environments kept, "
                "least recently used evicted first.", minimum=0),
        # the local queue (``[queue] name = "local"``) reads the same table
        Setting("root", "str", None, "The local queue's directory (backend `queue` with "
                "`[queue] name = \"local\"`)."),
        Setting("max_receives", "int", 3, "Local queue: receives before a message is dead.",
                minimum=1),
        Setting("visibility_timeout", "float", 30.0, "Local queue: seconds a received "
                "message stays hidden.", minimum=0),
    ], doc="The `local` backend: worker processes on this computer.")
    register("localfs", [
        Setting("root", "str", None, "Directory of job data; unset: "
                "`$XDG_CACHE_HOME/wrencore/storage` (`~/.cache/wrencore/storage`)."),
        Setting("max_age", "float", 7 * 24 * 3600.0, "Seconds a finished job's data is kept "
                "before it is pruned; 0 keeps everything.", minimum=0),
    ], doc="The `localfs` storage: files under a local directory.")


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


@hookimpl
def wrencore_check_config(backend, config, report) -> None:
    if backend != "local":
        return
    import shutil

    python = config.section("local").get("python") or sys.executable
    found = shutil.which(python) or (os.path.isfile(python) and python)
    report("worker interpreter", bool(found), python if found else
           f"[local] python = {python!r} is not an executable")
    storage_name = str(config.get("storage") or "localfs")
    if storage_name != "localfs":
        return
    root = localfs_root(config.section("localfs"))
    parent = root
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    writable = os.access(parent, os.W_OK)
    report("storage directory", writable, root if writable else
           f"{root} cannot be created or written; set [localfs] root")
