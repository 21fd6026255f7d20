"""Registers the ``queue`` backend, the ``wrencore worker`` command and the default release
of an idle machine no provider launched (nothing to release: its workers exit)."""

from __future__ import annotations

import socket
from typing import Any, Mapping, Optional

from wrencore import hookimpl


@hookimpl
def wrencore_register_backends(register) -> None:
    register("queue", "wrencore_workers.backend:QueueBackend",
             description="calls through a queue ([queue] name) to workers started with "
                         "`wrencore worker`")


@hookimpl(trylast=True)
def wrencore_release_instance(instance_id: str, config: Mapping[str, Any]) -> Optional[bool]:
    """A plain machine: nothing to terminate; the idle workers exit."""
    return True


@hookimpl(trylast=True)
def wrencore_instance_id(config: Mapping[str, Any]) -> Optional[str]:
    """A plain machine is known by its host name."""
    return socket.gethostname()


@hookimpl
def wrencore_register_commands(cli) -> None:
    from .cli import add_commands

    add_commands(cli)


@hookimpl
def wrencore_register_settings(register) -> None:
    from wrencore.settings import Setting

    register("queue", [
        Setting("name", "str", None, "The queue plugin the `queue` backend sends calls "
                "through (`local`, `sqs`, `gcp_pubsub`); its own table names the queue."),
        Setting("key_file", "str", None, "The task key file clients sign with and workers "
                "verify (mode 0600); unset: `$WRENCORE_TASK_KEY_FILE` or "
                "`~/.config/wrencore/task-key.json`."),
    ], doc="The `queue` backend: calls through a queue to workers started with "
           "`wrencore worker`.")
    register("worker", [
        Setting("poll_wait", "float", None, "Seconds a receive waits for messages.", minimum=0),
        Setting("batch_size", "int", 10, "Messages received at once.", minimum=1),
        Setting("visibility_timeout", "float", 60.0, "Seconds a received message stays "
                "hidden; extended by the heartbeat.", minimum=0),
        Setting("heartbeat_interval", "float", 0.0, "Seconds between deadline extensions; "
                "0: a third of the visibility timeout.", minimum=0),
        Setting("prefetch_below", "float", 0.0, "Start the next receive while a receive's "
                "calls run when the previous receive's calls took less than this many "
                "seconds (0: never). Worth it where a receive waits long on the network and "
                "cores are free; on a busy machine it costs more CPU than it saves.",
                minimum=0),
        Setting("log_level", "str", "INFO", "The daemons' log level."),
    ], doc="`wrencore worker`: settings of its daemons, beyond the command's options. "
           "Other daemon settings pass through unchecked.", open=True)


@hookimpl
def wrencore_task_key_source(backend, config):
    """For the queue backends (``queue``, ``gcp_pubsub``): the key file ``[queue] key_file``
    (default ``$WRENCORE_TASK_KEY_FILE`` or ``~/.config/wrencore/task-key.json``), which
    ``wrencore worker --key-file`` reads."""
    from wrencore.plugins import get_registry
    from wrencore_runtime.auth import FileKeySource, default_key_file

    from .backend import QueueBackend

    try:
        backend_class = get_registry().load("backend", backend)
    except Exception:  # unknown, or its SDK missing: the core reports that
        return None
    if not (isinstance(backend_class, type) and issubclass(backend_class, QueueBackend)):
        return None

    return FileKeySource(str(config.section("queue").get("key_file") or default_key_file()))
