"""Cancelling calls on the fleet harness (real supervisord and daemons): a running call is
stopped and its daemon goes on with the next call, a queued one is skipped, and Ctrl-C
cancels the rest of the job."""

from __future__ import annotations

import json
import os

import boto3
import pytest

import wrencore
from tests import cancel_workload as work
from tests.local.test_cancel import ctrl_c_script, run_and_interrupt
from tests.procs_util import wait_until_gone
from tests.servers import procs
from wrencore_runtime import layout


def _status(bucket, future):
    """The call's stored status: its own, or its entry in a batch status covering it (a
    daemon writes the outcomes of one receive together, so a skipped call and the next one
    can share a batch)."""
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"jobs/{future.job_id}/")
    for item in listed.get("Contents", []):
        key = item["Key"][len("jobs/"):]
        if key == layout.status_key(future.job_id, future.call_id):
            return json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        if layout.batch_status_covers(key, future.call_id):
            batch = json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            for status in batch["statuses"]:
                if status["call_id"] == future.call_id:
                    return status
    return None


def test_cancel_stops_a_running_call_and_its_daemon_runs_the_next(standalone_config, fleet,
                                                                  bucket, tmp_path):
    directory = str(tmp_path)
    harness = fleet(numprocs=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=standalone_config()) as executor:
        running = executor.submit(work.started_then_held, 0, directory)
        (instance,) = harness.wait_for_instances(1)
        procs.wait_until(lambda: 0 in work.started(directory), 120, "the call to start")
        victim = work.started(directory)[0]  # the daemon, or its runtime's process
        queued = executor.submit(work.started_then_held, 1, directory)
        assert executor.cancel([running, queued]) == 2
        with pytest.raises(wrencore.CallCancelledError):
            running.result(timeout=10)
        with pytest.raises(wrencore.CallCancelledError):
            queued.result(timeout=10)
        wait_until_gone([victim], timeout=30)  # the running call was stopped
        # The one daemon process (restarted if it ended itself) runs the next call.
        assert executor.submit(work.started_then_held, 2, directory).result(timeout=60) == 2
        procs.wait_until(lambda: _status(bucket, queued), 30, "the skipped call's status")
        stopped, skipped = _status(bucket, running), _status(bucket, queued)
    assert set(work.started(directory)) == {0, 2}  # the cancelled queued call never ran
    assert stopped["exception"]["type"].endswith("CallCancelledError")
    assert "while it ran" in stopped["exception"]["message"]
    assert skipped["exception"]["type"].endswith("CallCancelledError")
    assert "before it started" in skipped["exception"]["message"]
    # The replaced daemon may still be within supervisord's startsecs (STARTING, no pid yet).
    procs.wait_until(lambda: len(instance.daemon_pids()) == 1, 10, "one running daemon")


def test_ctrl_c_on_the_fleet_cancels_the_rest_of_the_job(standalone_config, fleet, tmp_path):
    fleet(numprocs=2)
    config = standalone_config(batch_size=1)  # each daemon holds the one call it runs
    script = ctrl_c_script(
        "wrencore.get_all_results(futures)", str(tmp_path),
        f"executor = wrencore.Executor(backend='aws_sqs_ec2', config={config!r})")
    out, err = run_and_interrupt(script, tmp_path, started=2, timeout=180)
    assert err.splitlines() == ["wrencore: interrupted; cancelled 6 calls"], err
    assert "KeyboardInterrupt reached the script" in out
    assert int(out.split()[-1]) == 6  # every call of the job ended cancelled
    running = [int(name) for name in os.listdir(tmp_path) if name.isdigit()]
    assert len(running) == 2
    wait_until_gone(running, timeout=30)  # the daemons stopped the running calls
