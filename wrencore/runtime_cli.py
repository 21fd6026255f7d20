"""``wrencore runtime build|list|show|delete|test``: runtimes from the command line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from typing import Any, Callable, Optional


def _load_function(spec: str) -> Callable:
    module_name, _, qualname = spec.partition(":")
    if not qualname:
        raise SystemExit(f"wrencore: error: name a function as module:function, not {spec!r}")
    sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _executor(args: argparse.Namespace, **kwargs: Any):
    import wrencore

    return wrencore.Executor(backend=args.backend, storage=args.storage, **kwargs)


def _requirements(args: argparse.Namespace) -> Any:
    if args.requirements_file:
        return args.requirements_file
    return list(args.requirement or []) or None


def _cmd_build(args: argparse.Namespace) -> int:
    from .environment import job_runtime

    fn = _load_function(args.function) if args.function else None
    mode = "explicit" if args.explicit or fn is None else "auto"
    with _executor(args) as executor:
        start = time.perf_counter()
        runtime = job_runtime(fn, mode, _requirements(args), executor.storage, executor.backend)
        elapsed = time.perf_counter() - start
    print(runtime.describe())
    total = sum(os.path.getsize(w.path) for w in (runtime.wheels or {}).values())
    print(f"{len(runtime.distributions)} distributions, {total / 1e6:.2f} MB of wheels, "
          f"stored in {executor.storage!r} in {elapsed:.2f} s")
    print(f"use it with runtime=\"sha256:{runtime.hash}\"")
    return 0


def _storage(args: argparse.Namespace):
    with _executor(args) as executor:
        return executor.storage


def _cmd_list(args: argparse.Namespace) -> int:
    from .environment import list_stored

    manifests = list_stored(_storage(args))
    if not manifests:
        print("no runtimes stored")
    for m in manifests:
        size = sum(w["size"] for w in m["wheels"])
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.get("created", 0)))
        print(f"sha256:{m['hash'][:16]}  python {m['python']}  {m['platform']:<16} "
              f"{len(m['distributions']):3d} distributions {size / 1e6:8.2f} MB  {created}")
    return 0


def _manifest(args: argparse.Namespace):
    from .environment import load_named
    from wrencore_runtime.environment import load_manifest

    storage = _storage(args)
    runtime = load_named(storage, args.runtime)
    return storage, load_manifest(storage, runtime.hash)


def _cmd_show(args: argparse.Namespace) -> int:
    _, manifest = _manifest(args)
    print(f"runtime sha256:{manifest['hash']}\n  python {manifest['python']} on "
          f"{manifest['platform']}")
    for wheel in manifest["wheels"]:
        why = "; ".join(manifest.get("reasons", {}).get(wheel["name"], []))
        print(f"  {wheel['name']}=={wheel['version']:<14} {wheel['size'] / 1e6:7.2f} MB "
              f"({wheel['unpacked_size'] / 1e6:.2f} MB unpacked, {wheel['origin']})  {why}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from .environment import delete_stored

    storage, manifest = _manifest(args)
    print(f"deleted {delete_stored(storage, manifest['hash'])} objects of runtime "
          f"sha256:{manifest['hash'][:16]}")
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
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
    print(f"{args.function}({', '.join(args.args)}) = {result!r}")
    print(f"ran in an isolated environment of runtime sha256:{runtime_hash}")
    return 0


def add_commands(subparsers: Any) -> None:
    runtime = subparsers.add_parser("runtime", help="build, inspect and test job runtimes")
    commands = runtime.add_subparsers(dest="runtime_command", metavar="COMMAND")

    def common(parser: argparse.ArgumentParser, requirements: bool = False) -> None:
        parser.add_argument("--backend", default=None, help="whose workers (default: config)")
        parser.add_argument("--storage", default=None, help="where runtimes are stored")
        if requirements:
            parser.add_argument("-r", "--requirement", action="append",
                                help="a requirement (repeatable)")
            parser.add_argument("--requirements-file", help="requirements.txt or pyproject.toml")

    build = commands.add_parser("build", help="detect, build and store a runtime; show why")
    build.add_argument("function", nargs="?", help="module:function whose imports to detect")
    build.add_argument("--explicit", action="store_true", help="only the requirements")
    common(build, requirements=True)
    build.set_defaults(func=_cmd_build)
    listing = commands.add_parser("list", help="the runtimes in storage")
    common(listing)
    listing.set_defaults(func=_cmd_list)
    for name, func, text in (("show", _cmd_show, "a stored runtime's distributions"),
                             ("delete", _cmd_delete, "delete a stored runtime")):
        parser = commands.add_parser(name, help=text)
        parser.add_argument("runtime", help="sha256:HASH or a unique prefix")
        common(parser)
        parser.set_defaults(func=func)
    test = commands.add_parser("test", help="run a function once in an isolated local "
                                            "environment built from its runtime")
    test.add_argument("function", help="module:function")
    test.add_argument("args", nargs="*", help="arguments, as JSON")
    test.add_argument("--runtime", default=None, help="a stored runtime (default: detect)")
    test.add_argument("--storage", default=None)
    test.add_argument("--timeout", type=float, default=300)
    test.add_argument("-r", "--requirement", action="append")
    test.add_argument("--requirements-file")
    test.set_defaults(func=_cmd_test)
    runtime.set_defaults(func=lambda args: runtime.print_help() or 2)
