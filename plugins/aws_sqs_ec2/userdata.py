"""What a worker instance is booted with: cloud-init user-data and supervisord's config.

The user-data is a ``#cloud-config`` document that

1. writes the daemon's settings (``/etc/wrencore/daemon.json``), supervisord's config
   (``/etc/wrencore/supervisord.conf``) and a bootstrap script;
2. runs the bootstrap script, which gets a Python build of the client's minor version (the
   image's own, else one ``uv`` installs), fetches the daemon's runtime — ``wrencore[standalone]``
   and its dependencies as wheels of the client's exact versions and code, which the client
   stored as a runtime (see ``wrencore.environment``) — through a presigned URL, unpacks it
   into the virtualenv ``/opt/wrencore`` and starts supervisord. No package index is asked
   for anything of wrencore: an unreleased or editable client works.

Jobs bring their own runtimes: a daemon builds one environment per runtime hash from the
stored wheels under ``/var/lib/wrencore/envs`` and runs such a job's calls there.

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
UNPACK_PATH = f"{ETC_DIR}/unpack.py"
PROGRAM = "wrencore-daemon"
#: The number of daemon processes reaches supervisord (and the daemons) through this variable.
NUMPROCS_ENV = "WRENCORE_DAEMON__NUMPROCS"

PINNED_DISTRIBUTIONS = ("cloudpickle", "boto3", "botocore", "watchtower", "supervisor", "pluggy")
BOOT_DIR = "/var/cache/wrencore-boot"
#: The bootstrap line that gets a Python build; the fleet test harness replaces only it.
GET_PYTHON_PREFIX = "PYTHON_BUILD="
#: What every instance's daemon environment holds (at the client's versions).
DAEMON_REQUIREMENTS = ("wrencore[standalone]",)


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


def daemon_settings(settings: StandaloneSettings, queue_spec: Dict[str, Any],
                    task_key: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The daemon's settings file (see ``wrencore_runtime.daemon.DaemonSettings``).

    ``task_key`` says where the task key is (a KeySource spec), never what it is.
    """
    return {
        "queue": queue_spec,
        "task_key": task_key or {},
        "state_dir": STATE_DIR,
        "idle_timeout": settings.idle_timeout,
        "min_uptime": settings.min_uptime,
        "terminate": True,
        "provider": "ec2",
        "provider_config": {"fleet": settings.fleet, "min_instances": settings.min_instances},
        # Backup if TerminateInstances fails: instances launch with shutdown -> terminate.
        "shutdown_command": "shutdown -h now",
        "poll_wait": settings.poll_wait,
        "batch_size": settings.batch_size,
        "visibility_timeout": settings.visibility_timeout,
        "metadata_url": settings.metadata_url,
        "region": settings.region or "",
        "cloudwatch": True,
        "log_group": settings.log_group,
        "env_max_age": settings.env_max_age,
        "env_max_bytes": settings.env_max_bytes,
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


#: Unpacks the daemon's runtime bundle, trusting nothing in it before it is checked: the
#: manifest against the digest the user-data carries (the client's, not storage's), every
#: wheel against the manifest's SHA-256, and no member but plain files the manifest names.
#: Someone able to write the bucket cannot change what the instance installs.
UNPACK_SCRIPT = """\
import hashlib, json, os, sys, tarfile

bundle, target, manifest_sha256 = sys.argv[1:4]
with tarfile.open(bundle) as archive:
    members = {m.name: m for m in archive.getmembers()}
    def read(name):
        member = members.get(name)
        if member is None or not member.isfile() or "/" in name or name.startswith("."):
            sys.exit(f"runtime bundle: {name!r} is missing or not a plain file")
        return archive.extractfile(member).read()
    manifest = read("runtime.json")
    if hashlib.sha256(manifest).hexdigest() != manifest_sha256:
        sys.exit("runtime bundle: its manifest is not the one the client stored "
                 "(SHA-256 differs); nothing was installed")
    wheels = {w["file"]: w["sha256"] for w in json.loads(manifest)["wheels"]}
    extra = set(members) - set(wheels) - {"runtime.json"}
    if extra:
        sys.exit(f"runtime bundle: unexpected members {sorted(extra)}; nothing was installed")
    files = {"runtime.json": manifest}
    for name, digest in wheels.items():
        data = read(name)
        if hashlib.sha256(data).hexdigest() != digest:
            sys.exit(f"runtime bundle: {name} does not match the manifest's SHA-256; "
                     f"nothing was installed")
        files[name] = data
for name, data in files.items():
    with open(os.path.join(target, name), "wb") as f:
        f.write(data)
"""


def bootstrap_script(python: str, runtime_hash: str, bundle_url: str, numprocs: int,
                     manifest_sha256: str = "") -> str:
    """The instance's bootstrap: a Python build, then only what the client stored (checked
    by :data:`UNPACK_SCRIPT` against ``manifest_sha256``)."""
    # One daemon per core by default; an instance (or the test harness) may preset it.
    procs = str(numprocs) if numprocs else f"${{{NUMPROCS_ENV}:-$(nproc)}}"
    return f"""\
#!/bin/sh
# Builds the daemon's environment from the runtime the client stored and starts supervisord.
set -eu
mkdir -p {STATE_DIR} {LOG_DIR} {RUN_DIR} {BOOT_DIR}
# Get a Python {python} build: the one step that may need more than the client stored.
{GET_PYTHON_PREFIX}"$(command -v python{python} || {{ python3 -m pip install --quiet --break-system-packages uv >&2 || python3 -m pip install --quiet uv >&2; python3 -m uv python install {python} >&2; python3 -m uv python find {python}; }})"
# The daemon's runtime {runtime_hash}: wheels of the client's exact versions.
"$PYTHON_BUILD" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' '{bundle_url}' {BOOT_DIR}/bundle.tar
rm -rf {BOOT_DIR}/wheels {VENV_DIR} && mkdir -p {BOOT_DIR}/wheels
"$PYTHON_BUILD" {UNPACK_PATH} {BOOT_DIR}/bundle.tar {BOOT_DIR}/wheels '{manifest_sha256}'
"$PYTHON_BUILD" -m venv --without-pip {VENV_DIR}
SITE="$({PYTHON} -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for wheel in {BOOT_DIR}/wheels/*.whl; do "$PYTHON_BUILD" -m zipfile -e "$wheel" "$SITE"; done
cp {BOOT_DIR}/wheels/runtime.json {VENV_DIR}/wrencore-runtime.json
export {NUMPROCS_ENV}="{procs}"
exec {PYTHON} -m supervisor.supervisord -c {SUPERVISOR_CONF_PATH} ${{WRENCORE_SUPERVISORD_ARGS:-}}
"""


def render_user_data(settings: StandaloneSettings, queue_spec: Dict[str, Any],
                     runtime_hash: str, bundle_url: str,
                     versions: Optional[Dict[str, str]] = None,
                     task_key: Optional[Dict[str, Any]] = None,
                     manifest_sha256: str = "") -> str:
    """The ``#cloud-config`` user-data of a worker instance whose daemon runs the stored
    runtime ``runtime_hash``, fetched from ``bundle_url``."""
    versions = versions or client_versions()
    files: List[Dict[str, Any]] = [
        {"path": SETTINGS_PATH, "permissions": "0644", "owner": "root:root",
         "content": json.dumps(daemon_settings(settings, queue_spec, task_key), indent=2) + "\n"},
        {"path": SUPERVISOR_CONF_PATH, "permissions": "0644", "owner": "root:root",
         "content": supervisord_conf()},
        {"path": BOOTSTRAP_PATH, "permissions": "0755", "owner": "root:root",
         "content": bootstrap_script(versions["python"], runtime_hash, bundle_url,
                                     settings.numprocs, manifest_sha256)},
        {"path": UNPACK_PATH, "permissions": "0644", "owner": "root:root",
         "content": UNPACK_SCRIPT},
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
