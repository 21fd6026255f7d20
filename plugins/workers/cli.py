"""``wrencore worker``: turn this machine into a worker of a queue.

It writes the daemon's settings and a supervisord configuration into a state directory and
becomes supervisord, which runs ``--processes`` daemons: a crashed one is restarted at once
(``autorestart=unexpected``), one that exits cleanly stays down (``exitcodes=0``). When every
daemon has been idle for ``--idle-timeout`` seconds, one of them releases the machine
(``wrencore_release_instance``: nothing on a plain machine) and shuts supervisord down, so
the command exits with status 0. SIGTERM or Ctrl-C stops it at once; calls under way are
redelivered to other workers when their messages' deadlines pass.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from types import SimpleNamespace
from typing import Any, Dict

import click

PROGRAM = "wrencore-worker"


def add_commands(cli: click.Group) -> None:
    cli.add_command(worker)


WORKER_HELP = """Run worker daemons on this machine, pulling calls from a queue.

A crashed daemon is restarted at once; one that exits cleanly stays down. When every daemon
has been idle for --idle-timeout seconds, the machine is released (an EC2 instance of a
fleet terminates; a plain machine just stops working) and the command exits with status 0.
SIGTERM or Ctrl-C stops it at once; calls under way go to other workers when their
messages' deadlines pass.
"""


@click.command(help=WORKER_HELP, short_help="Run worker daemons pulling calls from a queue.")
@click.option("--queue", required=True, metavar="NAME",
              help="the queue plugin (e.g. gcp_pubsub, sqs, local); its config table names "
                   "the queue")
@click.option("--storage", required=True, metavar="NAME",
              help="the storage the jobs use (e.g. gcs, s3, localfs); checked at start")
@click.option("--processes", type=click.IntRange(min=0), default=0, metavar="N",
              help="daemon processes (default: one per core)")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=300.0, metavar="S",
              help="exit after every process was idle this long (default 300)")
@click.option("--state-dir", default=None, metavar="DIR",
              help="settings, logs and idle markers (default: a new temp dir)")
@click.option("--key-file", default=None, metavar="PATH",
              help="the task key its clients sign with (default: $WRENCORE_TASK_KEY_FILE or "
                   "~/.config/wrencore/task-key.json; mode 0600)")
@click.option("--config", "config", metavar="JSON", default=None,
              help='configuration overrides, e.g. \'{"gcp_pubsub": {"name": "q"}}\'')
def worker(**kwargs: Any) -> int:
    return run(SimpleNamespace(**kwargs))


def supervisord_conf(state_dir: str, settings_path: str, numprocs: int) -> str:
    return f"""[unix_http_server]
file={state_dir}/supervisor.sock

[supervisord]
logfile={state_dir}/supervisord.log
pidfile={state_dir}/supervisord.pid
childlogdir={state_dir}/logs
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{state_dir}/supervisor.sock

[program:{PROGRAM}]
command={sys.executable} -m wrencore_workers.entry --settings {settings_path}
process_name=%(program_name)s-%(process_num)d
numprocs={numprocs}
autostart=true
autorestart=unexpected
exitcodes=0
startsecs=0
stopsignal=TERM
stopwaitsecs=10
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={state_dir}/logs/%(program_name)s-%(process_num)d.log
"""


def prepare(args: SimpleNamespace) -> str:
    """Check the queue and storage, write settings and supervisord's config; its path."""
    from wrencore.config import Config
    from wrencore.plugins import get_registry

    from wrencore.cli import json_option

    config = Config(json_option(args.config))
    registry = get_registry()
    queue_cls = registry.load("queue", args.queue)
    queue = queue_cls(**dict(config.section(args.queue)))  # created if missing
    registry.load("storage", args.storage)(config.section(args.storage))
    numprocs = args.processes or os.cpu_count() or 1
    state_dir = os.path.abspath(args.state_dir or tempfile.mkdtemp(prefix="wrencore-worker-"))
    os.makedirs(os.path.join(state_dir, "logs"), exist_ok=True)
    for stale in ("terminating", "terminated"):
        try:
            os.unlink(os.path.join(state_dir, stale))
        except FileNotFoundError:
            pass
    conf_path = os.path.join(state_dir, "supervisord.conf")
    from wrencore_runtime.auth import FileKeySource, default_key_file

    key_file = os.path.abspath(os.path.expanduser(args.key_file or default_key_file()))
    if FileKeySource(key_file).load() is None:
        print(f"wrencore worker: no task key in {key_file} yet; it is created by the first "
              f"client that submits calls (or copy the clients' key file there)",
              file=sys.stderr)
    settings: Dict[str, Any] = {
        "queue": queue.to_spec(),
        "task_key": FileKeySource(key_file).to_spec(),
        "state_dir": state_dir,
        "numprocs": numprocs,
        "idle_timeout": args.idle_timeout,
        "terminate": True,
        "provider": "",
        "instance_id": socket.gethostname(),
        "shutdown_command": f"{sys.executable} -m supervisor.supervisorctl -c {conf_path} "
                            f"shutdown",
        "poll_wait": min(20.0, max(1.0, args.idle_timeout / 2)),
        "cloudwatch": False,
    }
    settings.update(config.section("worker"))
    settings_path = os.path.join(state_dir, "daemon.json")
    with open(settings_path, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    with open(conf_path, "w", encoding="utf-8") as f:
        f.write(supervisord_conf(state_dir, settings_path, numprocs))
    return conf_path


def run(args: SimpleNamespace) -> int:
    conf_path = prepare(args)
    print(f"wrencore worker: {args.processes or os.cpu_count()} process(es) on queue "
          f"{args.queue}; state in {os.path.dirname(conf_path)}", flush=True)
    # supervisord takes this process's place: signals reach it, its exit status is ours.
    os.execv(sys.executable, [sys.executable, "-m", "supervisor.supervisord",
                              "-c", conf_path, "-n"])
    return 1  # not reached
