"""The daemon's entry point on a worker instance (what supervisord runs).

It resolves the instance id and the log handlers through the plugin hooks
``wrencore_instance_id`` and ``wrencore_worker_log_handlers`` — so another plugin can
supply them — and runs :mod:`wrencore_runtime.daemon`. If the plugins cannot be loaded it
falls back to the daemon's own defaults (metadata service, watchtower).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import List, Optional

from wrencore_runtime import daemon

logger = logging.getLogger(__name__)

COMPONENT = "standalone-daemon"


def _from_hooks(settings: daemon.DaemonSettings):
    from wrencore.plugins import get_plugin_manager

    hook = get_plugin_manager().hook
    config = dataclasses.asdict(settings)
    instance_id = settings.instance_id or hook.wrencore_instance_id(config=config)
    if not instance_id:
        raise RuntimeError("no plugin could tell this machine's instance id")
    groups = hook.wrencore_worker_log_handlers(component=COMPONENT, instance_id=instance_id,
                                               process_name=settings.process_name,
                                               config=config)
    handlers = [h for group in groups if group for h in group]
    return instance_id, handlers


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="wrencore-standalone-worker")
    parser.add_argument("--settings", help="the daemon's JSON settings file")
    args = parser.parse_args(argv)
    settings = daemon.DaemonSettings.load(args.settings)
    daemon.configure_logging(settings)
    try:
        instance_id, handlers = _from_hooks(settings)
    except Exception as exc:
        logger.warning("plugin hooks unavailable (%s: %s); using the daemon's defaults",
                       type(exc).__name__, exc)
        instance_id = settings.instance_id or daemon.fetch_instance_id(settings.metadata_url)
        handler = daemon.cloudwatch_handler(
            settings.log_group, daemon.stream_name(instance_id, settings.process_name),
            settings.region, settings.log_send_interval) if settings.cloudwatch else None
        handlers = [handler] if handler is not None else []
    return daemon.serve(settings, instance_id, handlers)


if __name__ == "__main__":
    sys.exit(main())
