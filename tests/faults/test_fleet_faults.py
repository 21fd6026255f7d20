"""Faults under running jobs on the fleet harness (moto, real supervisord and daemons):
an instance powered off mid-call, and a corrupt status — every future ends once, with its
own outcome, in bounded time, and no process of a simulated instance is left behind."""

from __future__ import annotations

import os
import time

import pytest

import wrencore
from wrencore.errors import StatusError
from tests.servers import procs

from . import workload


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _runs(marker_dir, x):
    path = os.path.join(marker_dir, f"run-{x}")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(p) for p in f.read().split()]


def test_instance_terminated_mid_call_kills_all_its_processes_and_the_call_is_redelivered(
        standalone_config, fleet, tmp_path):
    config = standalone_config(fleet_check_interval=0.5, visibility_timeout=2)
    harness = fleet(numprocs=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        future = executor.submit(workload.record_run, {"dir": str(tmp_path), "x": 4, "hold": 60})
        ends = []
        future.add_done_callback(ends.append)
        (first,) = harness.wait_for_instances(1)
        procs.wait_until(lambda: _runs(tmp_path, 4), 30, "the first run")
        (victim,) = _runs(tmp_path, 4)
        assert victim in first.processes()
        executor.backend.standalone.terminate([first.id])
        # EC2 powers the instance off: supervisord, the daemon and the call, all at once.
        procs.wait_until(lambda: not first.processes() and not _alive(victim), 15,
                         "every process of the terminated instance to be gone")
        # No daemon finishes the call: it is redelivered to the instance launched instead.
        assert future.result(timeout=60) == 40
        second = [i for i in harness.instances.values() if i.id != first.id]
        assert len(second) == 1
        assert future.metadata["worker_id"].startswith(second[0].id)
    runs = _runs(tmp_path, 4)
    assert len(runs) == 2 and runs[0] == victim
    assert ends == [future]
    harness.stop()
    assert all(not i.processes() for i in harness.instances.values())


def test_a_corrupt_status_ends_its_call_instead_of_being_read_forever(standalone_config, fleet,
                                                                      bucket):
    config = standalone_config(visibility_timeout=1)
    config["status_reads"] = 3
    harness = fleet(numprocs=1)
    tasks = [dict({"x": i, "call_id": f"{i:05d}", "bucket": bucket},
                  **({"liar": True, "status": "corrupt"} if i == 1 else {})) for i in range(3)]
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        futures = executor.map_futures(workload.lie_about_status, tasks)
        ends = []
        for f in futures:
            f.add_done_callback(ends.append)
        harness.wait_for_instances(1)
        assert futures[0].result(timeout=60) == 0
        start = time.monotonic()
        with pytest.raises(StatusError, match=f"s3://{bucket}/.*00001/status.json.*is corrupt"):
            futures[1].result(timeout=30)
        assert time.monotonic() - start < 15
        assert futures[2].result(timeout=60) == 2
    assert sorted(f.call_id for f in ends) == ["00000", "00001", "00002"]
    harness.stop()
    assert all(not i.processes() for i in harness.instances.values())
