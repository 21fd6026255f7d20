"""``wrencore runtime build|list|show|delete|test``: runtimes from the command line."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from types import SimpleNamespace
from typing import Any, Callable

import click

def _load_function(spec: str) -> Callable:
    module_name, _, qualname = spec.partition(":")
    if not qualname:
        raise click.BadParameter(f"name a function as module:function, not {spec!r}")
    sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _executor(args: SimpleNamespace, **kwargs: Any):
    import wrencore

    return wrencore.Executor(backend=args.backend, storage=args.storage, **kwargs)


def _requirements(args: SimpleNamespace) -> Any:
    if args.requirements_file:
        return args.requirements_file
    return list(args.requirement or []) or None


def _cmd_build(args: SimpleNamespace) -> int:
    from .environment import job_runtime

    fn = _load_function(args.function) if args.function else None
    mode = "explicit" if args.explicit or fn is None else "auto"
    with _executor(args) as executor:
        start = time.perf_counter()
        runtime = job_runtime(fn, mode, _requirements(args), executor.storage, executor.backend)
        elapsed = time.perf_counter() - start
    click.echo(runtime.describe())
    total = sum(os.path.getsize(w.path) for w in (runtime.wheels or {}).values())
    click.echo(f"{len(runtime.distributions)} distributions, {total / 1e6:.2f} MB of wheels, "
          f"stored in {executor.storage!r} in {elapsed:.2f} s")
    click.echo(f"use it with runtime=\"sha256:{runtime.hash}\"")
    return 0


def _storage(args: SimpleNamespace):
    with _executor(args) as executor:
        return executor.storage


def _cmd_list(args: SimpleNamespace) -> int:
    from .environment import list_stored

    manifests = list_stored(_storage(args))
    if not manifests:
        click.echo("no runtimes stored")
    for m in manifests:
        size = sum(w["size"] for w in m["wheels"])
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.get("created", 0)))
        click.echo(f"sha256:{m['hash'][:16]}  python {m['python']}  {m['platform']:<16} "
              f"{len(m['distributions']):3d} distributions {size / 1e6:8.2f} MB  {created}")
    return 0


def _manifest(args: SimpleNamespace):
    from .environment import load_named
    from wrencore_runtime.environment import load_manifest

    storage = _storage(args)
    runtime = load_named(storage, args.runtime)
    return storage, load_manifest(storage, runtime.hash)


def _cmd_show(args: SimpleNamespace) -> int:
    _, manifest = _manifest(args)
    click.echo(f"runtime sha256:{manifest['hash']}\n  python {manifest['python']} on "
          f"{manifest['platform']}")
    for wheel in manifest["wheels"]:
        why = "; ".join(manifest.get("reasons", {}).get(wheel["name"], []))
        click.echo(f"  {wheel['name']}=={wheel['version']:<14} {wheel['size'] / 1e6:7.2f} MB "
              f"({wheel['unpacked_size'] / 1e6:.2f} MB unpacked, {wheel['origin']})  {why}")
    return 0


def _cmd_delete(args: SimpleNamespace) -> int:
    from .environment import delete_stored

    storage, manifest = _manifest(args)
    click.echo(f"deleted {delete_stored(storage, manifest['hash'])} objects of runtime "
          f"sha256:{manifest['hash'][:16]}")
    return 0


def _cmd_test(args: SimpleNamespace) -> int:
    import wrencore

    fn = _load_function(args.function)
    call_args = [json.loads(a) for a in args.args]
    with wrencore.Executor(backend="local", storage=args.storage,
                           config={"local": {"workers": 1}},
                           runtime=args.runtime or "isolated",
                           requirements=_requirements(args)) as executor:
        future = executor.submit(fn, *call_args)
        result = future.result(timeout=args.timeout)
        runtime_hash = executor._submit_jobs[id(fn)][1]["runtime"]["hash"]
    click.echo(f"{args.function}({', '.join(args.args)}) = {result!r}")
    click.echo(f"ran in an isolated environment of runtime sha256:{runtime_hash}")
    return 0


def add_commands(cli: click.Group) -> None:
    cli.add_command(runtime)


@click.group()
def runtime() -> None:
    """Build, inspect and test job runtimes (the packages workers install)."""


def _common(requirements: bool = False) -> Callable:
    def decorate(fn: Callable) -> Callable:
        if requirements:
            fn = click.option("--requirements-file", default=None,
                              help="a requirements.txt or pyproject.toml")(fn)
            fn = click.option("-r", "--requirement", multiple=True,
                              help="a requirement (repeatable)")(fn)
        fn = click.option("--storage", default=None, help="where runtimes are stored "
                                                           "(default: config)")(fn)
        fn = click.option("--backend", default=None, help="whose workers (default: config)")(fn)
        return fn
    return decorate


@runtime.command()
@click.argument("function", required=False)
@click.option("--explicit", is_flag=True, help="only the requirements")
@_common(requirements=True)
def build(**kwargs: Any) -> int:
    """Detect, build and store a runtime, and show why each distribution is in it.

    FUNCTION is module:function, whose imports are detected.
    """
    return _cmd_build(SimpleNamespace(**kwargs))


@runtime.command("list")
@_common()
def list_(**kwargs: Any) -> int:
    """The runtimes in storage."""
    return _cmd_list(SimpleNamespace(**kwargs))


@runtime.command()
@click.argument("runtime")
@_common()
def show(**kwargs: Any) -> int:
    """A stored runtime's distributions (RUNTIME: sha256:HASH or a unique prefix)."""
    return _cmd_show(SimpleNamespace(**kwargs))


@runtime.command()
@click.argument("runtime")
@_common()
def delete(**kwargs: Any) -> int:
    """Delete a stored runtime (RUNTIME: sha256:HASH or a unique prefix)."""
    return _cmd_delete(SimpleNamespace(**kwargs))


@runtime.command()
@click.argument("function")
@click.argument("args", nargs=-1)
@click.option("--runtime", default=None, help="a stored runtime (default: detect)")
@click.option("--storage", default=None, help="where runtimes are stored (default: config)")
@click.option("--timeout", type=float, default=300, show_default=True, help="seconds")
@click.option("-r", "--requirement", multiple=True, help="a requirement (repeatable)")
@click.option("--requirements-file", default=None, help="a requirements.txt or pyproject.toml")
def test(**kwargs: Any) -> int:
    """Run FUNCTION (module:function) once in an isolated local environment built from its
    runtime; ARGS are JSON."""
    return _cmd_test(SimpleNamespace(**kwargs))
