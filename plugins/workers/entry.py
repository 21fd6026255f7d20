"""The worker daemon's entry point with plugins: what supervisord runs for ``wrencore
worker`` (and, through ``wrencore_aws_sqs_ec2.worker``, on EC2 instances).

The instance id, the log handlers and the release of an idle machine come from the hooks
``wrencore_instance_id``, ``wrencore_worker_log_handlers`` and ``wrencore_release_instance``;
the daemon itself (:mod:`wrencore_runtime.daemon`) knows no cloud.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Callable, List, Optional, Tuple

from wrencore_runtime import daemon

logger = logging.getLogger(__name__)

COMPONENT = "worker-daemon"


def from_hooks(settings: daemon.DaemonSettings, component: str = COMPONENT
               ) -> Tuple[str, List[logging.Handler], Callable[[str], Optional[bool]]]:
    """The instance id, log handlers and release callable the plugins provide."""
    from wrencore.plugins import get_plugin_manager

    hook = get_plugin_manager().hook
    config = dataclasses.asdict(settings)
    instance_id = settings.instance_id or hook.wrencore_instance_id(config=config)
    if not instance_id:
        raise RuntimeError("no plugin could tell this machine's instance id")
    groups = hook.wrencore_worker_log_handlers(component=component, instance_id=instance_id,
                                               process_name=settings.process_name,
                                               config=config)
    handlers = [h for group in groups if group for h in group]

    def release(iid: str) -> Optional[bool]:
        return hook.wrencore_release_instance(instance_id=iid, config=config)

    return instance_id, handlers, release


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="wrencore-worker-daemon")
    parser.add_argument("--settings", required=True, help="the daemon's JSON settings file")
    args = parser.parse_args(argv)
    settings = daemon.DaemonSettings.load(args.settings)
    daemon.configure_logging(settings)
    instance_id, handlers, release = from_hooks(settings)
    return daemon.serve(settings, instance_id, handlers, release)


if __name__ == "__main__":
    sys.exit(main())
