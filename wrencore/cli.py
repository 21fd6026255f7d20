"""The ``wrencore`` command line. Plugins add subcommands through ``wrencore_register_commands``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from .plugins import CONCERNS, get_plugin_manager, get_registry


def _cmd_demo(args: argparse.Namespace) -> int:
    import cloudpickle

    import wrencore
    from wrencore import demo

    start = time.time()
    with wrencore.Executor(backend=args.backend) as executor:
        # By value: a worker has wrencore's runtime, not this client package.
        cloudpickle.register_pickle_by_value(demo)
        try:
            futures = executor.map_futures(demo.count_primes, range(args.calls))
        finally:
            cloudpickle.unregister_pickle_by_value(demo)
        results = wrencore.get_all_results(futures)
    elapsed = time.time() - start
    pids = {r["worker_pid"] for r in results}
    for r in results[:3]:
        print(f"  primes below {r['primes_below']}: {r['count']}")
    print(f"ran {len(results)} calls on backend {executor.backend_name!r} "
          f"in {len(pids)} worker processes, {elapsed:.2f} s")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    pm = get_plugin_manager()
    registry = get_registry()
    print("plugins:", ", ".join(sorted(n for n, _ in pm.list_name_plugin() if n)))
    for concern in CONCERNS:
        for name in registry.names(concern):
            entry = registry.get(concern, name)
            missing = entry.missing_modules()
            note = f"  (needs: {entry.install})" if missing else ""
            print(f"{concern:18} {name:14} [{entry.plugin}] {entry.description}{note}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_command

    return plot_command(args.job, args.output, args.backend, args.storage)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wrencore", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = subparsers.add_parser("demo", help="run a small map on a backend (default: local)")
    demo.add_argument("--backend", default=None)
    demo.add_argument("--calls", type=int, default=20)
    demo.set_defaults(func=_cmd_demo)
    plugins = subparsers.add_parser("plugins", help="list plugins and what they register")
    plugins.set_defaults(func=_cmd_plugins)
    plot = subparsers.add_parser(
        "plot", help="save a timeline and duration histogram of a job as PNG (wrencore[plot])")
    plot.add_argument("job", help="the job id")
    plot.add_argument("-o", "--output", default=None, help="the PNG file (default: JOB.png)")
    plot.add_argument("--backend", default=None)
    plot.add_argument("--storage", default=None)
    plot.set_defaults(func=_cmd_plot)
    from .runtime_cli import add_commands as add_runtime_commands

    add_runtime_commands(subparsers)
    get_plugin_manager().hook.wrencore_register_commands(subparsers=subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .errors import WrenError

    try:
        return int(args.func(args) or 0)
    except WrenError as exc:
        print(f"wrencore: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
