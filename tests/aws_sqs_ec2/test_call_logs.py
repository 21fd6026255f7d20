"""``Future.logs()`` on the fleet: a crashed call's lines come from CloudWatch Logs, where
each daemon ships its log through watchtower (group ``wrencore-standalone``, stream
``{instance}-{process}``), with what the calls it runs in environment processes log."""

from __future__ import annotations

import logging
import os
import time

import pytest

import wrencore
from wrencore.cli import main
from wrencore.errors import WorkerCrashedError
from tests.servers import procs


def log_then_crash(x):
    logging.getLogger("workload").warning("about to crash on %s", x)
    time.sleep(0.5)
    os._exit(3)


def log_and_return(x):
    logging.getLogger("workload").warning("logged for %s", x)
    print(f"printed for {x}")
    return x


def test_crashed_call_logs_come_from_cloudwatch_and_a_normal_call_keeps_its_own(
        standalone_config, fleet, bucket, capsys, monkeypatch):
    config = standalone_config(max_receives=1, visibility_timeout=1)
    harness = fleet(numprocs=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        normal = executor.submit(log_and_return, 8)
        harness.wait_for_instances(1)
        assert normal.result(timeout=60) == 8
        crashed = executor.submit(log_then_crash, 7)
        with pytest.raises(WorkerCrashedError):
            crashed.result(timeout=60)
    procs.wait_until(lambda: "about to crash on 7" in crashed.logs(), 20,
                     "the crashed call's log line in CloudWatch")
    text = crashed.logs()
    assert f"call {crashed.job_id}/{crashed.call_id} started" in text
    assert "logged for 8" not in text  # the earlier call's lines are not this one's
    assert normal.logs().startswith("printed for 8\n") and "logged for 8" in normal.logs()
    cloud = normal.logs(source="cloud")
    assert "logged for 8" in cloud and f"{normal.job_id}/{normal.call_id} succeeded" in cloud
    assert "about to crash" not in cloud
    # `wrencore logs JOB CALL` reads the same lines for a call that stored no outcome.
    monkeypatch.setenv("WRENCORE_S3__BUCKET", bucket)
    monkeypatch.setenv("WRENCORE_S3__PREFIX", "jobs")
    capsys.readouterr()
    assert main(["logs", crashed.job_id, crashed.call_id, "--backend", "aws_sqs_ec2"]) == 0
    out = capsys.readouterr().out
    assert "no stored outcome" in out and "about to crash on 7" in out
