"""Retries and backup attempts on the fleet harness (real supervisord and daemons): a call
whose daemon is killed mid-call is retried and the job completes with the right results,
and a straggler's backup wins while its original is stopped."""

from __future__ import annotations

import os

import wrencore
from wrencore.attempts import SpeculationPolicy
from tests import attempts_workload as work
from tests.procs_util import wait_until_gone
from tests.servers import procs


def test_a_call_whose_daemon_is_killed_is_retried(standalone_config, fleet, tmp_path):
    # One receive only: the killed call's message goes to the dead-letter queue at once,
    # so what runs it again is wrencore's retry (attempt 1), not SQS's redelivery.
    fleet(numprocs=2)
    config = standalone_config(max_receives=1, batch_size=1)
    directory = str(tmp_path)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config, retries=1) as executor:
        futures = executor.map_futures(
            lambda x: work.killed_on_first_attempt(x, directory, victims=(0, 3)), range(6))
        assert wrencore.get_all_results(futures, timeout=180) == [x * 10 for x in range(6)]
    assert sorted(os.listdir(tmp_path)) == ["killed-0", "killed-3"]
    for future in futures:
        if future.call_id in (futures[0].call_id, futures[3].call_id):
            assert future.metadata["attempts"] == 2 and future.metadata["attempt"] == 1
            [failed] = future.metadata["attempt_errors"]
            assert failed["attempt"] == 0
            assert failed["error"].startswith("WorkerCrashedError"), failed
        else:
            assert future.metadata["attempts"] == 1


def test_without_retries_a_killed_daemons_call_fails(standalone_config, fleet, tmp_path):
    fleet(numprocs=1)
    config = standalone_config(max_receives=1, batch_size=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        [future] = executor.map_futures(
            lambda x: work.killed_on_first_attempt(x, str(tmp_path)), [0])
        assert isinstance(future.exception(timeout=180), wrencore.WorkerCrashedError)


def test_a_stragglers_backup_wins_on_the_fleet(standalone_config, fleet, tmp_path):
    directory = str(tmp_path)
    fleet(numprocs=2)
    config = standalone_config(batch_size=1)  # no call waits behind the straggler
    policy = SpeculationPolicy(min_calls=8, fraction=0.5, multiple=2.0, min_time=0.5)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config,
                           speculation=policy) as executor:
        futures = executor.map_futures(
            lambda x: work.straggles_once(x, directory, seconds=0.2), range(8))
        try:
            assert wrencore.get_all_results(futures, timeout=120) == [x * 10 for x in range(8)]
            assert futures[0].metadata["backups"] == 1
            assert futures[0].metadata["attempt"] == 1
            straggler = int((tmp_path / "straggler-pid").read_text())
            wait_until_gone([straggler], timeout=60)  # the losing original was stopped
            assert not (tmp_path / "late-done").exists()
        finally:
            (tmp_path / "release").touch()
    assert futures[0].result() == 0
    assert all(f.metadata["backups"] == 0 for f in futures[1:])
