"""What a worker instance is booted with: cloud-init user-data and supervisord's config.

The user-data is a ``#cloud-config`` document that

1. writes the daemon's settings (``/etc/wrencore/daemon.json``), supervisord's config
   (``/etc/wrencore/supervisord.conf``) and a bootstrap script;
2. runs the bootstrap script, which installs the client's exact Python minor version and
   exact versions of wrencore, cloudpickle, boto3, watchtower and supervisor into
   ``/opt/wrencore`` (with ``uv``), then starts supervisord.

supervisord runs ``numprocs`` daemon processes (default: one per core, counted on the
instance), restarts one that crashes (``autorestart=unexpected``) and leaves one that exits
cleanly — after its instance terminated — down.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from typing import Any, Dict, List, Optional

from .settings import StandaloneSettings

#: Where things live on an instance. The fleet test harness maps these prefixes into a
#: temporary directory per simulated instance.
ETC_DIR = "/etc/wrencore"
STATE_DIR = "/var/lib/wrencore"
LOG_DIR = "/var/log/wrencore"
RUN_DIR = "/run/wrencore"
VENV_DIR = "/opt/wrencore"
PYTHON = f"{VENV_DIR}/bin/python"
SETTINGS_PATH = f"{ETC_DIR}/daemon.json"
SUPERVISOR_CONF_PATH = f"{ETC_DIR}/supervisord.conf"
BOOTSTRAP_PATH = f"{ETC_DIR}/bootstrap.sh"
PROGRAM = "wrencore-daemon"
#: The number of daemon processes reaches supervisord (and the daemons) through this variable.
NUMPROCS_ENV = "WRENCORE_AWS_SQS_EC2__NUMPROCS"

PINNED_DISTRIBUTIONS = ("cloudpickle", "boto3", "botocore", "watchtower", "supervisor", "pluggy")


def client_versions() -> Dict[str, str]:
    """The versions on this computer that a worker must match."""
    versions = {"python": f"{sys.version_info[0]}.{sys.version_info[1]}",
                "wrencore": metadata.version("wrencore")}
    for name in PINNED_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def daemon_settings(settings: StandaloneSettings, queue_spec: Dict[str, Any]) -> Dict[str, Any]:
    """The daemon's settings file (see ``wrencore_runtime.daemon.DaemonSettings``)."""
    return {
        "queue": queue_spec,
        "state_dir": STATE_DIR,
        "idle_timeout": settings.idle_timeout,
        "min_uptime": settings.min_uptime,
        "terminate": True,
        # Backup if TerminateInstances fails: instances launch with shutdown -> terminate.
        "shutdown_command": "shutdown -h now",
        "poll_wait": settings.poll_wait,
        "batch_size": settings.batch_size,
        "visibility_timeout": settings.visibility_timeout,
        "metadata_url": settings.metadata_url,
        "region": settings.region or "",
        "cloudwatch": True,
        "log_group": settings.log_group,
    }


def supervisord_conf(numprocs: Optional[int] = None) -> str:
    """supervisord's configuration; ``numprocs`` None reads it from ``$NUMPROCS_ENV``."""
    procs = str(numprocs) if numprocs else f"%(ENV_{NUMPROCS_ENV})s"
    return f"""\
[unix_http_server]
file={RUN_DIR}/supervisor.sock
chmod=0700

[supervisord]
logfile={LOG_DIR}/supervisord.log
pidfile={RUN_DIR}/supervisord.pid
childlogdir={LOG_DIR}
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{RUN_DIR}/supervisor.sock

[program:{PROGRAM}]
command={PYTHON} -m wrencore_aws_sqs_ec2.worker --settings {SETTINGS_PATH}
process_name=%(program_name)s-%(process_num)02d
numprocs={procs}
autostart=true
autorestart=unexpected
exitcodes=0
startsecs=1
startretries=100
stopwaitsecs=30
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={LOG_DIR}/%(program_name)s-%(process_num)02d.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=3
"""


def bootstrap_script(versions: Dict[str, str], install_spec: Optional[str],
                     numprocs: int) -> str:
    wrencore_req = install_spec or f"wrencore[standalone]=={versions['wrencore']}"
    pins = [f"{name}=={versions[name]}" for name in PINNED_DISTRIBUTIONS if name in versions]
    requirements = " ".join(f"'{r}'" for r in [wrencore_req, *pins])
    procs = str(numprocs) if numprocs else "$(nproc)"
    return f"""\
#!/bin/sh
# Installs the wrencore runtime at the client's versions and starts supervisord.
set -eu
mkdir -p {STATE_DIR} {LOG_DIR} {RUN_DIR}
python3 -m pip install --break-system-packages --quiet uv || python3 -m pip install --quiet uv
python3 -m uv python install {versions['python']}
python3 -m uv venv --python {versions['python']} {VENV_DIR}
python3 -m uv pip install --python {PYTHON} {requirements}
export {NUMPROCS_ENV}="{procs}"
exec {VENV_DIR}/bin/supervisord -c {SUPERVISOR_CONF_PATH}
"""


def render_user_data(settings: StandaloneSettings, queue_spec: Dict[str, Any],
                     versions: Optional[Dict[str, str]] = None) -> str:
    """The ``#cloud-config`` user-data of a worker instance."""
    versions = versions or client_versions()
    files: List[Dict[str, Any]] = [
        {"path": SETTINGS_PATH, "permissions": "0644", "owner": "root:root",
         "content": json.dumps(daemon_settings(settings, queue_spec), indent=2) + "\n"},
        {"path": SUPERVISOR_CONF_PATH, "permissions": "0644", "owner": "root:root",
         "content": supervisord_conf()},
        {"path": BOOTSTRAP_PATH, "permissions": "0755", "owner": "root:root",
         "content": bootstrap_script(versions, settings.install_spec, settings.numprocs)},
    ]
    document = {
        "package_update": True,
        "packages": ["python3", "python3-pip", "python3-venv"],
        "write_files": files,
        "runcmd": [[BOOTSTRAP_PATH]],
    }
    # JSON is YAML, and needs no YAML library on the user's computer.
    return "#cloud-config\n" + json.dumps(document, indent=2) + "\n"


def parse_user_data(text: str) -> Dict[str, Any]:
    if not text.startswith("#cloud-config"):
        raise ValueError("not a #cloud-config document")
    return json.loads(text.partition("\n")[2])
