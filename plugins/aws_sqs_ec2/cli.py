"""``wrencore standalone launch | list | terminate | queue-size | purge``."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, Dict, List

STANDALONE_HELP = "manage the standalone (SQS + EC2) fleet of [aws_sqs_ec2]"


def add_commands(subparsers: "argparse._SubParsersAction") -> None:
    parser = subparsers.add_parser("standalone", help=STANDALONE_HELP,
                                   description=STANDALONE_HELP)
    parser.add_argument("--config", metavar="JSON", default=None,
                        help='configuration overrides, e.g. \'{"aws_sqs_ec2": {"fleet": "x"}}\'')
    commands = parser.add_subparsers(dest="standalone_command", required=True)

    launch = commands.add_parser("launch", help="launch more worker instances (up to "
                                                      "max_instances live)")
    launch.add_argument("--count", type=int, required=True, help="how many instances")
    launch.set_defaults(func=_launch)

    listing = commands.add_parser("list", help="list the fleet's instances")
    listing.add_argument("--all", action="store_true", help="include stopped and terminated")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_list)

    terminate = commands.add_parser("terminate", help="terminate instances")
    group = terminate.add_mutually_exclusive_group(required=True)
    group.add_argument("--all", action="store_true", help="every live instance of the fleet")
    group.add_argument("ids", nargs="*", default=[], metavar="ID", help="instance ids")
    terminate.set_defaults(func=_terminate)

    size = commands.add_parser("queue-size", help="messages waiting, in flight, dead")
    size.add_argument("--json", action="store_true", help="print JSON")
    size.set_defaults(func=_queue_size)

    purge = commands.add_parser("purge", help="delete every queued and dead message")
    purge.set_defaults(func=_purge)


def _standalone(args: argparse.Namespace):
    from .api import Standalone

    return Standalone(json.loads(args.config) if args.config else None)


def _launch(args: argparse.Namespace) -> int:
    if args.count < 1:
        print("--count must be at least 1")
        return 2
    standalone = _standalone(args)
    launched = standalone.launch(args.count)
    for instance_id in launched:
        print(instance_id)
    if len(launched) < args.count:
        print(f"launched {len(launched)} of {args.count}: the fleet may have at most "
              f"max_instances = {standalone.settings.max_instances} live instances",
              file=sys.stderr)
    return 0


def _format(instances: List[Dict[str, Any]]) -> str:
    lines = [f"{'ID':<21} {'STATE':<11} {'TYPE':<11} {'SPOT':<5} LAUNCHED"]
    for i in instances:
        launched = datetime.datetime.fromtimestamp(i["launch_timestamp"]).isoformat(" ", "seconds")
        lines.append(f"{i['id']:<21} {i['state']:<11} {i['type'] or '':<11} "
                     f"{'yes' if i['spot'] else 'no':<5} {launched}")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    instances = _standalone(args).list(all_states=args.all)
    print(json.dumps(instances, indent=2) if args.json else _format(instances))
    return 0


def _terminate(args: argparse.Namespace) -> int:
    standalone = _standalone(args)
    if not args.all and not args.ids:
        print("name instance ids, or --all")
        return 2
    ids = standalone.terminate(all=True) if args.all else standalone.terminate(args.ids)
    for instance_id in ids:
        print(f"terminated {instance_id}")
    return 0


def _queue_size(args: argparse.Namespace) -> int:
    depth = _standalone(args).queue_size()
    if args.json:
        print(json.dumps(depth))
    else:
        print(f"visible {depth['visible']}  in flight {depth['in_flight']}  dead {depth['dead']}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    _standalone(args).purge()
    print("purged")
    return 0
