"""``wrencore keys show|rotate``: the task key of the configured backend (docs/security.md).

The key source comes from the ``wrencore_task_key_source`` hook: an SSM parameter for the
AWS backends, the key file for the queue backends. Nothing here prints key material: only
key ids and until when each is accepted.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Tuple

import click

from .errors import WrenError


def _source(backend: Optional[str]) -> Tuple[str, Any]:
    from .config import Config
    from .plugins import get_plugin_manager, get_registry

    config = Config({"backend": backend} if backend else None)
    name = str(config.get("backend") or "local")
    get_registry().get("backend", name)  # an unknown name lists the known ones
    source = get_plugin_manager().hook.wrencore_task_key_source(backend=name, config=config)
    if source is None:
        raise WrenError(f"backend {name!r} signs no task messages, so it has no task key; "
                        f"choose a backend that does with --backend (see docs/security.md)")
    return name, source


def _where(source: Any) -> str:
    details = ", ".join(f"{k} {v}" for k, v in sorted(source.config.items()) if v)
    return f"{type(source).__name__} ({details})"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _describe(ring: Any) -> None:
    now = time.time()
    for key in ring.keys:
        if key.not_after is None:
            state = "signing"
        elif key.not_after > now:
            state = f"accepted until {_when(key.not_after)} ({key.not_after - now:.0f} s left)"
        else:
            state = f"expired {_when(key.not_after)}"
        click.echo(f"  {key.key_id}  {state}")


@click.group()
def keys() -> None:
    """Show or rotate the key that signs task messages (docs/security.md)."""


@keys.command()
@click.option("--backend", default=None, metavar="NAME", help="backend (default: config)")
def show(backend: Optional[str]) -> None:
    """List the task key's ids and until when each is accepted (never the key itself)."""
    name, source = _source(backend)
    ring = source.load()
    if ring is None:
        click.echo(f"backend {name!r}: no task key yet in {_where(source)}; its clients "
                   f"create it on first use")
        return
    click.echo(f"backend {name!r}: task key in {_where(source)}")
    _describe(ring)


@keys.command()
@click.option("--grace", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              metavar="SECONDS", help="how long workers still accept the current key")
@click.option("--backend", default=None, metavar="NAME", help="backend (default: config)")
def rotate(grace: float, backend: Optional[str]) -> None:
    """Start signing with a new key; the current one is accepted for --grace seconds.

    Clients re-read the key within a minute; workers read it when the first message signed
    with the new key reaches them. Keys whose grace period is over are dropped.
    """
    name, source = _source(backend)
    ring = source.rotate(grace=grace)
    click.echo(f"backend {name!r}: rotated the task key in {_where(source)}")
    _describe(ring)


def add_commands(cli: click.Group) -> None:
    cli.add_command(keys)
