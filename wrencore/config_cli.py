"""``wrencore config show|init|check``: the configuration, seen, started and verified."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import click

from .settings import Table, tables


def add_commands(cli: click.Group) -> None:
    cli.add_command(config)


@click.group()
def config() -> None:
    """See, start and verify the configuration.

    Sources, the later winning: defaults, the config file (WRENCORE_CONFIG, ./wrencore.toml,
    ~/.config/wrencore/config.toml), WRENCORE_… environment variables, keyword config.
    """


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def effective(cfg: Any, with_defaults: bool = True) -> List[Dict[str, Any]]:
    """Rows ``{table, key, value, source}`` of the effective configuration."""
    rows: List[Dict[str, Any]] = []
    declared = tables()
    top = declared[""]
    for key, setting in top.settings.items():
        if key in cfg.data:
            rows.append({"table": "", "key": key, "value": cfg.data[key],
                         "source": cfg.source(key)})
        elif with_defaults and setting.default is not None:
            rows.append({"table": "", "key": key, "value": setting.default,
                         "source": "default"})
    for name in sorted(n for n in cfg.data if isinstance(cfg.data[n], dict)):
        table = declared.get(name, Table(name))
        values = cfg.data[name]
        for key in sorted(set(values) | (set(table.settings) if with_defaults else set())):
            if key in values:
                rows.append({"table": name, "key": key, "value": values[key],
                             "source": cfg.source(f"{name}.{key}")})
            elif table.settings[key].default is not None:
                rows.append({"table": name, "key": key, "value": table.settings[key].default,
                             "source": "default"})
    return rows


@config.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--no-defaults", is_flag=True, help="only values set somewhere")
def show(as_json: bool, no_defaults: bool) -> None:
    """Print the effective configuration and where each value came from.

    Tables appear once a source sets one of their keys.
    """
    from .config import Config

    cfg = Config()
    rows = effective(cfg, with_defaults=not no_defaults)
    if as_json:
        click.echo(json.dumps({"file": cfg.path, "values": rows}, indent=2, default=str))
        return
    click.echo(f"# config file: {cfg.path or 'none found'}")
    current = None
    for row in rows:
        if row["table"] != current:
            current = row["table"]
            click.echo(f"\n[{current}]" if current else "")
        line = f"{row['key']} = {_toml_value(row['value'])}"
        click.echo(f"{line:<44} # {row['source']}")


def _backend_tables(backend: str) -> List[str]:
    """The tables a backend reads: its own and its default storage's."""
    from .errors import WrenError
    from .plugins import get_registry

    entry = get_registry().get("backend", backend)
    names = [backend]
    try:
        names.append(getattr(entry.load(), "default_storage", None) or "")
    except WrenError:  # its SDK is missing: no storage table to show
        pass
    declared = tables()
    return [n for n in dict.fromkeys(names) if n in declared]


def starting_file(backend: str) -> str:
    """A commented starting ``wrencore.toml`` for ``backend``."""
    from .plugins import get_registry

    get_registry().get("backend", backend)  # an unknown name lists the known ones
    declared = tables()
    lines = ["# wrencore configuration (see docs/configuration.md for every key).",
             "# A commented line shows a key's default; uncomment it to change it.", "",
             f'backend = "{backend}"']
    lines += _commented(declared[""], skip={"backend"})
    for name in _backend_tables(backend):
        table = declared[name]
        lines += ["", *(f"# {line}" for line in _wrap(table.doc)), f"[{name}]"]
        lines += _commented(table)
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int = 90) -> List[str]:
    import textwrap

    return [line for para in text.split("\n\n") for line in textwrap.wrap(para, width)]


def _commented(table: Table, skip: Any = ()) -> List[str]:
    lines = []
    for setting in table.settings.values():
        if setting.name in skip:
            continue
        lines += [f"# {line}" for line in _wrap(setting.doc, 88)]
        if setting.required:
            lines.append(f'{setting.name} = ""')
        elif setting.default is None:
            lines.append(f"# {setting.name} =            ({setting.type}; unset by default)")
        else:
            lines.append(f"# {setting.name} = {_toml_value(setting.default)}")
    return lines


@config.command()
@click.option("--backend", default="local", show_default=True, metavar="NAME",
              help="the backend to configure")
@click.option("--path", default="wrencore.toml", show_default=True, help="file to write")
@click.option("--force", is_flag=True, help="overwrite an existing file")
def init(backend: str, path: str, force: bool) -> None:
    """Write a commented starting configuration file for a backend.

    Every key the backend, its storage and the top level read is listed with its default
    and meaning; required ones are left for you to fill in.
    """
    from .cli import fail

    if os.path.exists(path) and not force:
        raise fail(f"{path} exists; pass --force to overwrite it")
    text = starting_file(backend)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    click.echo(f"wrote {path} for backend {backend!r}; fill in the required keys, then run "
               f"`wrencore config check --backend {backend}`")


@config.command()
@click.option("--backend", default=None, metavar="NAME", help="backend (default: config)")
def check(backend: Optional[str]) -> int:
    """Verify what a backend needs: credentials, region, bucket, queue, deployed runtime
    and permissions. Each check prints ok or exactly what is missing; the exit code is 1
    if any failed."""
    from .config import Config
    from .plugins import get_plugin_manager, get_registry

    cfg = Config({"backend": backend} if backend else None)
    name = str(cfg.get("backend") or "local")
    get_registry().get("backend", name)
    click.echo(f"checking backend {name!r} (config file: {cfg.path or 'none'})")
    failures: List[str] = []
    checked: List[str] = []

    def report(what: str, ok: bool, detail: str = "") -> None:
        checked.append(what)
        if not ok:
            failures.append(what)
        mark = "ok     " if ok else "MISSING"
        click.echo(f"  {mark} {what}" + (f": {detail}" if detail else ""))

    get_plugin_manager().hook.wrencore_check_config(backend=name, config=cfg, report=report)
    if not checked:
        click.echo(f"  no plugin has checks for backend {name!r}; the configuration is valid")
    if failures:
        click.echo(f"{len(failures)} of {len(checked)} checks failed", err=True)
        return 1
    click.echo(f"all {len(checked)} checks passed")
    return 0

