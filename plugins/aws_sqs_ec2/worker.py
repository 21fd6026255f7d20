"""The daemon's entry point on a worker instance (what supervisord runs).

It resolves the instance id, the log handlers and the release of an idle instance through
the plugin hooks ``wrencore_instance_id``, ``wrencore_worker_log_handlers`` and
``wrencore_release_instance`` — so another plugin can supply them — and runs
:mod:`wrencore_runtime.daemon`. If the plugins cannot be loaded it falls back to this
plugin's EC2 defaults (metadata service, CloudWatch, TerminateInstances).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from wrencore_runtime import daemon

from . import instance

logger = logging.getLogger(__name__)

COMPONENT = "standalone-daemon"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="wrencore-standalone-worker")
    parser.add_argument("--settings", help="the daemon's JSON settings file")
    args = parser.parse_args(argv)
    settings = daemon.DaemonSettings.load(args.settings)
    daemon.configure_logging(settings)
    try:
        from wrencore_workers.entry import from_hooks

        instance_id, handlers, release = from_hooks(settings, COMPONENT)
    except Exception as exc:
        logger.warning("plugin hooks unavailable (%s: %s); using the EC2 defaults",
                       type(exc).__name__, exc)
        instance_id = settings.instance_id or instance.fetch_instance_id(settings.metadata_url)
        handler = instance.cloudwatch_handler(
            settings.log_group, daemon.stream_name(instance_id, settings.process_name),
            settings.region, settings.log_send_interval) if settings.cloudwatch else None
        handlers = [handler] if handler is not None else []

        def release(iid: str) -> bool:
            provider = settings.provider_config
            return instance.release_ec2_instance(
                iid, settings.region, fleet=str(provider.get("fleet") or ""),
                min_instances=int(provider.get("min_instances") or 0))
    return daemon.serve(settings, instance_id, handlers, release)


if __name__ == "__main__":
    sys.exit(main())
