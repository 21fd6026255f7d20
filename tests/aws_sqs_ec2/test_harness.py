"""The fleet harness itself: a broken instance is reported with its logs, not as a timeout."""

from __future__ import annotations

import time

import pytest

from tests.servers import procs

from wrencore_aws_sqs_ec2 import Standalone
from wrencore_aws_sqs_ec2.userdata import render_user_data
from tests.servers.fleet_harness import InstanceBootError


def test_an_instance_whose_bootstrap_fails_is_reported_with_its_console_log(
        standalone_config, fleet):
    standalone = Standalone(standalone_config())
    # The daemon's runtime cannot be fetched: the bootstrap (set -eu) stops there.
    user_data = render_user_data(standalone.settings, {"class": "unused:Queue", "config": {}},
                                 "0" * 64, "http://127.0.0.1:9/no-such-bundle.tar")
    harness = fleet(numprocs=1)
    standalone.provider.launch(1, user_data=user_data)
    (instance,) = harness.wait_for_instances(1)
    start = time.monotonic()
    with pytest.raises(InstanceBootError) as info:
        harness.wait_for_daemons(1, timeout=60)
    assert time.monotonic() - start < 20  # at once, not after the wait's timeout
    message = str(info.value)
    assert f"simulated instance {instance.id} stopped on its own" in message
    assert "bootstrap/supervisord exit code" in message
    assert "Connection refused" in message  # the bootstrap's own error, from its console
    # The harness's own poll (every 0.2 s) records it too, for tests that never wait.
    procs.wait_until(lambda: any(isinstance(e, InstanceBootError) for e in harness.errors),
                     10, "the harness to record the boot failure")
    assert "Connection refused" in harness.failure_report()
