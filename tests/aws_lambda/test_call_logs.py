"""``Future.logs()`` on Lambda: a crashed call's lines come from CloudWatch Logs, where the
harness ships each sandbox's output and log records (group ``/aws/lambda/<function>``)."""

from __future__ import annotations

import pytest

import wrencore
from wrencore.errors import WorkerCrashedError
from tests.servers import procs

from . import workload


def test_crashed_call_logs_come_from_cloudwatch_and_a_normal_call_keeps_its_own(lambda_env):
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in lambda_env.config.items()}
    config["aws_lambda"].update(timeout=3, result_grace=1)  # a crash is noticed sooner
    with wrencore.Executor(backend="aws_lambda", config=config) as executor:
        crashed, normal = executor.map_futures(workload.log_then_crash, [7]) + \
            executor.map_futures(workload.log_and_return, [8])
        with pytest.raises(WorkerCrashedError):
            crashed.result(timeout=60)
        assert normal.result(timeout=60) == 8
    procs.wait_until(lambda: "about to crash on 7" in crashed.logs(), 20,
                     "the crashed call's log line in CloudWatch")
    text = crashed.logs()
    assert f"call {crashed.job_id}/{crashed.call_id} started" in text
    assert "logged for 8" not in text  # another call's lines are not this one's
    # A call with a status keeps the output it carried; CloudWatch has its lines too.
    assert normal.logs().startswith("printed for 8\n") and "logged for 8" in normal.logs()
    procs.wait_until(lambda: "logged for 8" in normal.logs(source="cloud"), 20,
                     "the normal call's log line in CloudWatch")
    assert "about to crash" not in normal.logs(source="cloud")
