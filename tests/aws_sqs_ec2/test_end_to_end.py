"""The standalone backend end to end: moto (SQS, EC2, S3, IAM, CloudWatch Logs), simulated
instances running real supervisord and the real daemon."""

from __future__ import annotations

import json
import os
import threading
import time

import boto3
import pytest

import wrencore
from wrencore.errors import WorkerCrashedError
from wrencore_aws_sqs_ec2.api import Standalone
from tests.servers import procs


def square(x):
    return x * x


def test_map_500_calls_over_two_instances_of_two_processes(standalone_config, fleet):
    config = standalone_config(min_instances=2, max_instances=2)
    harness = fleet(numprocs=2)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        futures = executor.map_futures(square, range(500))
        instances = harness.wait_for_instances(2)
        results = wrencore.get_all_results(futures, timeout=120)
    assert results == [x * x for x in range(500)]
    workers = {f.metadata["worker_id"] for f in futures}
    instance_ids = {i.id for i in instances}
    assert {w.rsplit("-wrencore-daemon-", 1)[0] for w in workers} == instance_ids
    assert len(workers) == 4, workers


def record_run(marker_dir, x, hold):
    """Append this process's pid to the call's marker; hold the first run for ``hold`` s."""
    path = os.path.join(marker_dir, f"run-{x}")
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        runs = f.read().split()
    if len(runs) == 1:
        time.sleep(hold)
    return x * 10


def runs_of(marker_dir, x):
    path = os.path.join(marker_dir, f"run-{x}")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(p) for p in f.read().split()]


def test_kill_9_mid_call_is_restarted_and_the_call_redelivered(standalone_config, fleet,
                                                                tmp_path):
    harness = fleet(numprocs=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=standalone_config()) as executor:
        future = executor.submit(record_run, str(tmp_path), 7, 60)
        completions = []
        future.add_done_callback(completions.append)
        (instance,) = harness.wait_for_instances(1)
        procs.wait_until(lambda: runs_of(tmp_path, 7), 30, "the first run")
        (victim,) = runs_of(tmp_path, 7)
        # The process running the call: the daemon itself, or the process it runs the
        # job's runtime in (the daemon exits with it, as if killed).
        daemons = set(instance.daemon_pids().values())
        os.kill(victim, 9)
        # supervisord brings a new daemon up; the message comes back after its visibility.
        procs.wait_until(lambda: set(instance.daemon_pids().values()) - daemons - {victim}, 30,
                         "the restarted daemon")
        assert future.result(timeout=60) == 70
        time.sleep(3)  # longer than the visibility timeout: any duplicate would show now
    runs = runs_of(tmp_path, 7)
    assert len(runs) == 2 and runs[0] == victim and runs[1] != victim
    assert completions == [future]


def test_long_call_is_not_run_twice_thanks_to_the_heartbeat(standalone_config, fleet, tmp_path,
                                                             monkeypatch):
    from wrencore_aws_sqs_ec2 import backend

    harness = fleet(numprocs=2)  # an idle sibling would pick up a lapsed message
    # Nothing else is queued while it runs: its message in flight keeps it from being
    # given up as purged (lost_after_empty; moto's counts are exact).
    monkeypatch.setattr(backend, "SQS_COUNTS_SETTLE", 0)
    config = standalone_config(visibility_timeout=1, lost_after_empty=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        future = executor.submit(record_run, str(tmp_path), 3, 6)
        harness.wait_for_instances(1)
        assert future.result(timeout=60) == 30
    assert len(runs_of(tmp_path, 3)) == 1
    assert future.metadata["worker_exec_time"] >= 6


def test_calls_whose_messages_are_purged_fail_instead_of_waiting(standalone_config,
                                                                monkeypatch):
    from wrencore_aws_sqs_ec2 import backend

    monkeypatch.setattr(backend, "SQS_COUNTS_SETTLE", 0)  # moto's counts are exact
    # No daemon runs: the calls wait in the queue until it is purged by hand.
    config = standalone_config(lost_after_empty=1, min_instances=0)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        futures = executor.map_futures(square, [1, 2, 3])
        queue = executor.backend.standalone.queue
        procs.wait_until(lambda: queue.depth()["visible"] == 3, 30, "the calls queued")
        time.sleep(1.5)
        assert not any(f.done() for f in futures)  # a queue holding them: they wait
        queue.purge()
        for future in futures:
            with pytest.raises(WorkerCrashedError, match=r"no longer queued: the task queue "
                                                         r"q-\w+ has held nothing"):
                future.result(timeout=30)


def crash_on_13(x):
    if x == 13:
        os._exit(3)
    return x


def test_poison_message_goes_to_dead_letter_queue_and_its_future_errors(standalone_config,
                                                                         fleet):
    config = standalone_config(max_receives=2, visibility_timeout=1)
    harness = fleet(numprocs=1)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        futures = executor.map_futures(crash_on_13, [1, 13, 2])
        queue = executor.backend.standalone.queue
        boto3.client("sqs").send_message(QueueUrl=queue.url, MessageBody="{not a task")
        harness.wait_for_instances(1)
        assert futures[0].result(timeout=60) == 1
        assert futures[2].result(timeout=60) == 2
        with pytest.raises(WorkerCrashedError, match="dead-letter queue"):
            futures[1].result(timeout=60)
        procs.wait_until(lambda: len(queue.dead_letters()) == 2, 30, "both dead letters")
    bodies = [m.body for m in queue.dead_letters()]
    assert "{not a task" in bodies
    (task,) = [b for b in bodies if b != "{not a task"]
    body = json.loads(task)["body"]  # the signed envelope's message (wrencore_runtime.auth)
    assert f'"call_id":"{futures[1].call_id}"' in body and futures[1].job_id in body
    assert "refused message" in harness.logs() and "is not JSON" in harness.logs()


def test_idle_instance_terminates_itself_but_not_while_a_sibling_is_busy(standalone_config,
                                                                          fleet, tmp_path):
    config = standalone_config(idle_timeout=2, min_instances=0)  # min 1 would keep it
    harness = fleet(numprocs=2, reap_terminated=False)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        future = executor.submit(record_run, str(tmp_path), 1, 8)
        (instance,) = harness.wait_for_instances(1)
        procs.wait_until(lambda: runs_of(tmp_path, 1), 30, "the call to start")
        started = time.time()
        time.sleep(6)  # the sibling has been idle for longer than idle_timeout by now
        markers = os.path.join(instance.root, "state", "processes")
        idle = [n for n in os.listdir(markers) if '"busy": false' in open(
            os.path.join(markers, n)).read()]
        assert len(idle) == 1, "one process should be idle while the other runs the call"
        assert harness.states()[instance.id] == "running"
        assert future.result(timeout=30) == 10
        assert time.time() - started >= 7.5
    procs.wait_until(lambda: harness.states()[instance.id] == "terminated", 30,
                     "the instance to terminate itself")
    procs.wait_until(lambda: not instance.supervisord_running, 30, "supervisord to stop")
    assert "releasing it" in instance.log_text()


def test_daemon_logs_reach_cloudwatch_under_group_and_stream(standalone_config, fleet):
    harness = fleet(numprocs=2)
    with wrencore.Executor(backend="aws_sqs_ec2", config=standalone_config()) as executor:
        futures = executor.map_futures(square, range(6))
        (instance,) = harness.wait_for_instances(1)
        assert wrencore.get_all_results(futures, timeout=60) == [x * x for x in range(6)]
    logs = boto3.client("logs")
    streams = [f"{instance.id}-wrencore-daemon-00", f"{instance.id}-wrencore-daemon-01"]
    expected = {f"{f.job_id}/{f.call_id} succeeded" for f in futures}

    def found():
        events = logs.filter_log_events(logGroupName="wrencore-standalone",
                                        logStreamNames=streams)["events"]
        return {e for e in expected if any(e in ev["message"] for ev in events)}

    procs.wait_until(lambda: found() == expected, 30, "the calls' log lines in CloudWatch")


def test_calls_complete_when_cloudwatch_is_unreachable(standalone_config, fleet):
    dead_endpoint = f"http://127.0.0.1:{procs.free_port()}"
    harness = fleet(numprocs=2, extra_env={"AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": dead_endpoint})
    with wrencore.Executor(backend="aws_sqs_ec2", config=standalone_config()) as executor:
        futures = executor.map_futures(square, range(20))
        harness.wait_for_instances(1)
        assert wrencore.get_all_results(futures, timeout=60) == [x * x for x in range(20)]
    assert boto3.client("logs").describe_log_groups()["logGroups"] == []
    log = harness.logs()
    assert "CloudWatch Logs unavailable" in log
    assert "succeeded" in log  # the lines are kept in the local log files


def test_waiting_calls_get_a_new_instance_when_the_fleet_is_gone(standalone_config, fleet):
    config = standalone_config(fleet_check_interval=0.5)
    with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
        future = executor.submit(square, 4)
        gone = executor.backend.standalone.terminate(all=True)  # before anything ran
        assert len(gone) == 1
        harness = fleet(numprocs=1)  # boots only live instances: the relaunched one
        assert future.result(timeout=60) == 16
    states = harness.states()
    assert states.pop(gone[0]) == "terminated"
    assert list(states.values()) == ["running"]


def slow_square(x):
    time.sleep(2)
    return x * x


def test_the_fleet_grows_with_the_queue_up_to_max_and_shrinks_to_min_when_idle(
        standalone_config, fleet):
    config = standalone_config(min_instances=1, max_instances=2, idle_timeout=2,
                               batch_size=1, fleet_check_interval=1)
    fleet(numprocs=1)
    standalone = Standalone(config)
    sizes, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            sizes.append(len(standalone.list()))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
            assert list(executor.map(slow_square, range(8))) == [x * x for x in range(8)]
        procs.wait_until(lambda: len(standalone.list()) == 1, 90,
                         "the fleet to shrink to min_instances")
        time.sleep(6)  # idle for longer than idle_timeout again: the last one stays
        assert len(standalone.list()) == 1
    finally:
        stop.set()
        watcher.join()
    assert max(sizes) == 2, "grew with the queue, up to max_instances and never beyond"
