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
def wrencore_register_commands(subparsers) -> None:
    from .cli import add_commands

    add_commands(subparsers)
