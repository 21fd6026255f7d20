"""`wrencore keys rotate --backend aws_lambda` on the SSM parameter (moto) the function reads
(harness): a client that read the key before the rotation still runs calls within the grace
period, and its calls are refused by the function after it; new clients keep working."""

from __future__ import annotations

import json
import time

import boto3
import pytest

import wrencore
from tests.trust.test_keys_cli import _key_lines, _keys, square
from wrencore.errors import MessageRefusedError

#: Long enough for a cold sandbox to start and run a call on a loaded machine.
GRACE = 15


def test_keys_rotate_the_ssm_parameter_of_the_lambda_backend(lambda_env, capsys):
    config = json.loads(json.dumps(lambda_env.config))
    config["aws_lambda"]["dead_letter_check_interval"] = 0.3
    with wrencore.Executor(backend="aws_lambda", config=config) as old_client:
        assert old_client.submit(square, 2).result(timeout=120) == 4  # deployed, key read

        out = _keys(capsys, "rotate", "--backend", "aws_lambda", "--grace", str(GRACE))
        rotated_at = time.time()
        lambda_env.reset()  # sandboxes started from now on read the rotated ring
        parameter = boto3.client("ssm").get_parameter(Name="/wrencore/task-key",
                                                      WithDecryption=True)
        ring_ids = [k["id"] for k in json.loads(parameter["Parameter"]["Value"])["keys"]]
        assert [line[0] for line in _key_lines(out)] == ring_ids and len(ring_ids) == 2
        shown = _keys(capsys, "show", "--backend", "aws_lambda")
        assert "/wrencore/task-key" in shown
        assert [line[:2] for line in _key_lines(shown)] == [[ring_ids[0], "accepted"],
                                                             [ring_ids[1], "signing"]]
        for key in json.loads(parameter["Parameter"]["Value"])["keys"]:
            assert key["secret"] not in out + shown

        assert old_client.submit(square, 5).result(timeout=60) == 25  # within grace
        with wrencore.Executor(backend="aws_lambda", config=config) as new_client:
            assert wrencore.get_all_results(new_client.map_futures(square, range(4)),
                                            timeout=60) == [0, 1, 4, 9]
        time.sleep(max(0.0, rotated_at + GRACE + 0.5 - time.time()))
        late = old_client.submit(square, 6)
        with pytest.raises(MessageRefusedError, match="refused its task message") as info:
            late.result(timeout=30)
    errors = lambda_env.stats()["errors"]
    assert [e["errorType"] for e in errors] == ["MessageRefusedError"]
    assert f"signed with key '{ring_ids[0]}'" in str(info.value)
    assert "grace period is over" in str(info.value)
