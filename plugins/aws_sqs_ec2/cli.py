"""``wrencore standalone launch | list | terminate | queue-size | purge``.

Only ``launch`` creates resources (the queue, the instance profile, instances); ``list``,
``queue-size``, ``purge`` and ``terminate`` only read or change what exists.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Dict, List, Optional

import click

STANDALONE_HELP = "Manage the standalone (SQS + EC2) fleet of [aws_sqs_ec2]."


def add_commands(cli: click.Group) -> None:
    cli.add_command(standalone)


@click.group(help=STANDALONE_HELP)
@click.option("--config", "config_json", metavar="JSON", default=None,
              help='configuration overrides, e.g. \'{"aws_sqs_ec2": {"fleet": "x"}}\'')
@click.pass_context
def standalone(ctx: click.Context, config_json: Optional[str]) -> None:
    from wrencore.cli import json_option

    ctx.obj = json_option(config_json)


def _standalone(ctx: click.Context):
    from wrencore_aws.clients import require_region_and_credentials

    from .api import Standalone

    fleet = Standalone(ctx.obj)
    require_region_and_credentials(dict(fleet.config.section("aws_sqs_ec2")))
    return fleet


@standalone.command()
@click.option("--count", type=click.IntRange(min=1), required=True, help="how many instances")
@click.pass_context
def launch(ctx: click.Context, count: int) -> None:
    """Launch more worker instances (up to max_instances live)."""
    fleet = _standalone(ctx)
    launched = fleet.launch(count)
    for instance_id in launched:
        click.echo(instance_id)
    if len(launched) < count:
        click.echo(f"launched {len(launched)} of {count}: the fleet may have at most "
                   f"max_instances = {fleet.settings.max_instances} live instances", err=True)


def _format(instances: List[Dict[str, Any]]) -> str:
    lines = [f"{'ID':<21} {'STATE':<11} {'TYPE':<11} {'SPOT':<5} LAUNCHED"]
    for i in instances:
        launched = datetime.datetime.fromtimestamp(i["launch_timestamp"]).isoformat(" ", "seconds")
        lines.append(f"{i['id']:<21} {i['state']:<11} {i['type'] or '':<11} "
                     f"{'yes' if i['spot'] else 'no':<5} {launched}")
    return "\n".join(lines)


@standalone.command("list")
@click.option("--all", "all_states", is_flag=True, help="include stopped and terminated")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_context
def list_(ctx: click.Context, all_states: bool, as_json: bool) -> None:
    """List the fleet's instances (creates nothing)."""
    instances = _standalone(ctx).list(all_states=all_states)
    click.echo(json.dumps(instances, indent=2) if as_json else _format(instances))


@standalone.command()
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_instances", is_flag=True, help="every live instance of the fleet")
@click.pass_context
def terminate(ctx: click.Context, ids: List[str], all_instances: bool) -> None:
    """Terminate the named instances, or --all of the fleet's."""
    if bool(ids) == all_instances:
        raise click.UsageError("name instance ids, or pass --all (not both)")
    fleet = _standalone(ctx)
    done = fleet.terminate(all=True) if all_instances else fleet.terminate(list(ids))
    for instance_id in done:
        click.echo(f"terminated {instance_id}")


@standalone.command("queue-size")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_context
def queue_size(ctx: click.Context, as_json: bool) -> None:
    """Messages waiting, in flight and dead (creates nothing)."""
    depth = _standalone(ctx).queue_size()
    if as_json:
        click.echo(json.dumps(depth))
    else:
        click.echo(f"visible {depth['visible']}  in flight {depth['in_flight']}  "
                   f"dead {depth['dead']}")


@standalone.command()
@click.pass_context
def purge(ctx: click.Context) -> None:
    """Delete every queued and dead message."""
    _standalone(ctx).purge()
    click.echo("purged")
