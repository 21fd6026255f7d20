"""The EC2 fleet, its least-privilege instance profile and the ``wrencore standalone`` commands
against moto."""

from __future__ import annotations

import json

import boto3
import pytest

from wrencore import plugins
from wrencore.errors import ConfigError
from wrencore_aws_sqs_ec2 import Standalone
from wrencore_aws_sqs_ec2.fleet import FLEET_TAG, QUEUE_TAG


def tags_of(instance_id):
    (reservation,) = boto3.client("ec2").describe_instances(
        InstanceIds=[instance_id])["Reservations"]
    (inst,) = reservation["Instances"]
    return inst, {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def test_launch_tags_profile_user_data_and_least_privilege_policy(standalone_config, bucket):
    config = standalone_config(instance_type="m5.large")
    standalone = Standalone(config)
    (instance_id,) = standalone.launch(1)
    inst, tags = tags_of(instance_id)
    fleet = standalone.settings.fleet
    assert tags[FLEET_TAG] == fleet and tags[QUEUE_TAG] == standalone.settings.queue_name
    assert inst["InstanceType"] == "m5.large"
    profile_name = f"wrencore-{fleet}-worker"
    assert inst["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{profile_name}")
    assert standalone.provider.user_data_of(instance_id) == standalone.user_data()

    iam = boto3.client("iam")
    (role,) = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]["Roles"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    policy = iam.get_role_policy(RoleName=role["RoleName"], PolicyName="wrencore-worker")
    document = policy["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    statements = {s["Sid"]: s for s in document["Statement"]}
    queue_arn = standalone.queue.arns()[0]
    assert statements["TaskQueue"]["Resource"] == queue_arn
    assert statements["Storage"]["Resource"] == f"arn:aws:s3:::{bucket}/jobs/*"
    assert statements["TerminateOwnFleet"]["Condition"] == {
        "StringEquals": {f"ec2:ResourceTag/{FLEET_TAG}": fleet}}
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) \
            else [statement["Action"]]
        assert all("*" not in a for a in actions), statement
        # EC2's Describe actions take no resource-level permissions; counting the
        # fleet (to keep min_instances) needs DescribeInstances on "*", and nothing else.
        assert statement["Resource"] != "*" or actions == ["ec2:DescribeInstances"]


def test_spot_option_requests_spot_instances(standalone_config):
    standalone = Standalone(standalone_config(spot=True))
    (instance_id,) = standalone.launch(1)
    inst, _ = tags_of(instance_id)
    assert inst.get("InstanceLifecycle") == "spot"
    assert standalone.list()[0]["spot"] is True


def test_fleet_size_is_kept_within_min_and_max(standalone_config):
    standalone = Standalone(standalone_config(min_instances=1, max_instances=3))
    assert len(standalone.ensure_fleet(0)) == 1          # min
    assert len(standalone.ensure_fleet(2)) == 1          # what is missing for 2
    assert len(standalone.ensure_fleet(50)) == 1         # capped at max
    assert standalone.ensure_fleet(50) == []
    assert len(standalone.list()) == 3


def test_max_instances_holds_for_launches_from_the_command_line(standalone_config, capsys):
    config = standalone_config(min_instances=0, max_instances=1)
    code, out = run_cli(config, "launch", "--count", "2", capsys=capsys)
    assert code == 0 and len(out.split()) == 1
    code, out = run_cli(config, "launch", "--count", "2", capsys=capsys)
    assert code == 0 and out.split() == []
    assert len(Standalone(config).list()) == 1


def test_the_fleet_target_follows_the_queue_depth(standalone_config):
    standalone = Standalone(standalone_config(min_instances=1, max_instances=3,
                                              messages_per_instance=2))
    assert standalone.fleet_target() == 1                   # min, with an empty queue
    standalone.queue.send_batch(["a", "b", "c"])
    assert standalone.fleet_target() == 2                   # ceil(3 / 2)
    standalone.queue.send_batch([str(i) for i in range(20)])
    assert standalone.fleet_target() == 3                   # capped at max
    assert len(standalone.ensure_fleet()) == 3 and standalone.ensure_fleet() == []


def test_list_and_terminate(standalone_config):
    standalone = Standalone(standalone_config(max_instances=3))
    ids = standalone.launch(3)
    assert sorted(i["id"] for i in standalone.list()) == sorted(ids)
    standalone.terminate([ids[0]])
    assert sorted(i["id"] for i in standalone.list()) == sorted(ids[1:])
    assert {i["id"]: i["state"] for i in standalone.list(all_states=True)}[ids[0]] == "terminated"
    with pytest.raises(ValueError, match="not instances of fleet"):
        standalone.terminate(["i-0123456789abcdef0"])
    with pytest.raises(ValueError, match="all=True"):
        standalone.terminate([])
    assert sorted(standalone.terminate(all=True)) == sorted(ids[1:])
    assert standalone.list() == []


def test_bad_configuration_is_reported_clearly(standalone_config):
    with pytest.raises(ConfigError, match="min_instances"):
        Standalone(standalone_config(min_instances=3, max_instances=2))
    with pytest.raises(ConfigError, match="ami"):
        Standalone(standalone_config(ami="")).launch(1)
    with pytest.raises(ConfigError, match="batch_size"):
        Standalone(standalone_config(batch_size=11))


def run_cli(config, *argv, capsys):
    from wrencore.cli import main

    code = main(["standalone", "--config", json.dumps(config), *argv])
    out, run_cli.err = capsys.readouterr()
    return code, out


def test_command_line(standalone_config, capsys):
    config = standalone_config(max_instances=5)
    code, out = run_cli(config, "launch", "--count", "2", capsys=capsys)
    assert code == 0
    ids = out.split()
    assert len(ids) == 2 and all(i.startswith("i-") for i in ids)
    code, out = run_cli(config, "list", "--json", capsys=capsys)
    assert sorted(i["id"] for i in json.loads(out)) == sorted(ids)
    code, out = run_cli(config, "list", capsys=capsys)
    assert all(i in out for i in ids) and "running" in out

    Standalone(config).queue.send_batch(["a", "b", "c"])
    code, out = run_cli(config, "queue-size", "--json", capsys=capsys)
    assert json.loads(out) == {"visible": 3, "in_flight": 0, "dead": 0}
    code, out = run_cli(config, "purge", capsys=capsys)
    assert code == 0
    code, out = run_cli(config, "queue-size", capsys=capsys)
    assert out.strip() == "visible 0  in flight 0  dead 0"

    code, out = run_cli(config, "terminate", ids[0], capsys=capsys)
    assert out.strip() == f"terminated {ids[0]}"
    code, out = run_cli(config, "terminate", "--all", capsys=capsys)
    assert out.strip() == f"terminated {ids[1]}"
    code, _ = run_cli(config, "terminate", capsys=capsys)
    assert code == 2
    assert "name instance ids, or pass --all" in run_cli.err


def test_list_and_queue_size_create_nothing(standalone_config, capsys):
    config = standalone_config(queue_name="wrencore-untouched")
    sqs, iam = boto3.client("sqs"), boto3.client("iam")
    queues, profiles = sqs.list_queues().get("QueueUrls", []), \
        iam.list_instance_profiles()["InstanceProfiles"]
    code, out = run_cli(config, "list", capsys=capsys)
    assert code == 0 and out.startswith("ID ")
    code, _ = run_cli(config, "queue-size", capsys=capsys)
    assert code == 1
    assert run_cli.err == (
        "wrencore: error: the SQS queue 'wrencore-untouched' does not exist: nothing has run "
        "on this fleet yet (`wrencore standalone launch` or a job creates it)\n")
    assert sqs.list_queues().get("QueueUrls", []) == queues
    assert iam.list_instance_profiles()["InstanceProfiles"] == profiles


def test_config_check_verifies_the_fleet_without_creating_anything(standalone_config, tmp_path,
                                                                   monkeypatch, capsys):
    from wrencore.cli import main

    config = standalone_config(ami="ami-00000000000000000", subnet_id="subnet-nope")
    monkeypatch.chdir(tmp_path)
    lines = ['backend = "aws_sqs_ec2"', "[s3]", f'bucket = "{config["s3"]["bucket"]}"',
             "[aws_sqs_ec2]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in config["aws_sqs_ec2"].items()]
    (tmp_path / "wrencore.toml").write_text("\n".join(lines) + "\n")
    sqs = boto3.client("sqs")
    queues = sqs.list_queues().get("QueueUrls", [])
    assert main(["config", "check"]) == 1
    out = capsys.readouterr().out
    assert "ok      credentials: arn:aws:" in out and "ok      storage permissions" in out
    assert "MISSING AMI: ami-00000000000000000" in out
    assert "MISSING subnet: subnet-nope" in out
    assert f"{config['aws_sqs_ec2']['queue_name']} does not exist yet" in out
    assert sqs.list_queues().get("QueueUrls", []) == queues
