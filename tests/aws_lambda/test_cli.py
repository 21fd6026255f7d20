"""``wrencore lambda …``, ``config check``, ``logs`` and the one-line AWS errors, on the
Lambda harness (moto + awslambdaric)."""

from __future__ import annotations

import json
import re
import zipfile

import boto3
import pytest

from wrencore.cli import main


def _run(argv):
    return main(argv)


def test_build_writes_a_complete_package(tmp_path, capsys):
    out = tmp_path / "runtime.zip"
    assert _run(["lambda", "build", str(out)]) == 0
    names = zipfile.ZipFile(out).namelist()
    assert "wrencore_aws_lambda/handler.py" in names
    assert "wrencore_runtime/runner.py" in names
    assert "cloudpickle/__init__.py" in names
    assert not any(n.startswith(("wrencore/", "boto3/")) for n in names)


def test_deploy_then_status(lambda_env, monkeypatch, capsys):
    monkeypatch.setenv("WRENCORE_STORAGE", "s3")
    monkeypatch.setenv("WRENCORE_S3__BUCKET", lambda_env.bucket)
    monkeypatch.setenv("WRENCORE_AWS_LAMBDA__TIMEOUT", "20")
    assert _run(["lambda", "status"]) == 1
    assert "not deployed" in capsys.readouterr().err
    assert _run(["lambda", "deploy"]) == 0
    deployed = json.loads(capsys.readouterr().out)
    assert deployed["timeout"] == 20 and deployed["name"].startswith("wrencore-")
    assert _run(["lambda", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["matches_client"] is True


def test_package_hash_is_stable_and_follows_content(tmp_path):
    import shutil

    import wrencore_runtime
    from wrencore_aws_lambda.package import build_package

    assert build_package().sha256 == build_package().sha256
    copy = tmp_path / "runtime"
    shutil.copytree(wrencore_runtime.__path__[0], copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert build_package(str(copy)).sha256 == build_package().sha256
    (copy / "runner.py").write_text((copy / "runner.py").read_text() + "\n# changed\n")
    assert build_package(str(copy)).sha256 != build_package().sha256


def test_demo_runs_on_lambda(lambda_env, monkeypatch, capsys):
    """The demo's function reaches a sandbox that has wrencore's runtime, not its client."""
    from wrencore.cli import main

    monkeypatch.setenv("WRENCORE_STORAGE", "s3")
    monkeypatch.setenv("WRENCORE_S3__BUCKET", lambda_env.bucket)
    assert main(["demo", "--backend", "aws_lambda", "--calls", "3"]) == 0
    out = capsys.readouterr().out
    assert "primes below 2000: 303" in out and "ran 3 calls on backend 'aws_lambda'" in out


def _lambda_storage(monkeypatch, bucket):
    monkeypatch.setenv("WRENCORE_STORAGE", "s3")
    monkeypatch.setenv("WRENCORE_S3__BUCKET", bucket)
    monkeypatch.setenv("WRENCORE_AWS_LAMBDA__TIMEOUT", "20")


def _zip_bytes():
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("python/marker.py", "")
    return buffer.getvalue()


def test_list_and_delete_remove_functions_and_their_roles(lambda_env, monkeypatch, capsys):
    _lambda_storage(monkeypatch, lambda_env.bucket)
    assert _run(["lambda", "list"]) == 0
    assert capsys.readouterr().out == "no wrencore Lambda functions\n"
    assert _run(["lambda", "deploy"]) == 0
    name = json.loads(capsys.readouterr().out)["name"]
    assert _run(["lambda", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(f["name"], f["current"]) for f in listed] == [(name, True)]
    assert _run(["lambda", "list"]) == 0
    assert re.search(rf"^{name} .* \(current\)$", capsys.readouterr().out, re.M)
    iam = boto3.client("iam")
    assert iam.get_role(RoleName=name[:64])
    assert _run(["lambda", "delete", "--stale"]) == 0
    assert capsys.readouterr().out == "nothing to delete\n"
    assert _run(["lambda", "delete", "wrencore-nope"]) == 1
    assert "not a wrencore function: wrencore-nope" in capsys.readouterr().err
    # The function's runtime layer goes with it; another wrencore layer, unused, stays.
    client = boto3.client("lambda")
    layers = [client.publish_layer_version(
        LayerName=f"wrencore-py311-{tag}", Content={"ZipFile": _zip_bytes()},
        CompatibleRuntimes=["python3.11"])["LayerVersionArn"] for tag in ("used", "other")]
    client.update_function_configuration(FunctionName=name, Layers=layers[:1])
    assert _run(["lambda", "delete", name]) == 0
    assert capsys.readouterr().out == (f"deleted {name}, its failure queue {name}-dlq and its "
                                       f"role {name[:64]}\n"
                                       f"deleted layer wrencore-py311-used:1\n")
    assert not client.list_layer_versions(LayerName="wrencore-py311-used")["LayerVersions"]
    assert client.list_layer_versions(LayerName="wrencore-py311-other")["LayerVersions"]
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=name[:64])
    sqs = boto3.client("sqs")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=f"{name}-dlq")
    assert _run(["lambda", "status"]) == 1


def test_config_check_says_what_is_missing(lambda_env, monkeypatch, capsys):
    _lambda_storage(monkeypatch, lambda_env.bucket + "-missing")
    monkeypatch.setenv("WRENCORE_AWS_LAMBDA__AUTO_DEPLOY", "false")
    assert _run(["config", "check", "--backend", "aws_lambda"]) == 1
    out = capsys.readouterr().out
    assert "ok      region: us-east-1" in out and "ok      credentials: arn:aws:" in out
    assert f"MISSING bucket: bucket '{lambda_env.bucket}-missing' does not exist" in out
    _lambda_storage(monkeypatch, lambda_env.bucket)
    assert _run(["config", "check", "--backend", "aws_lambda"]) == 1
    out = capsys.readouterr().out
    assert "ok      storage permissions" in out and "ok      Lambda access" in out
    assert "MISSING deployed runtime" in out and "run `wrencore lambda deploy`" in out
    assert _run(["lambda", "deploy"]) == 0
    capsys.readouterr()
    assert _run(["config", "check", "--backend", "aws_lambda"]) == 0
    out = capsys.readouterr().out
    assert "matches this client" in out and "checks passed" in out
    # the probe object is gone again
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=lambda_env.bucket)


def test_deploy_refuses_a_missing_bucket(lambda_env, monkeypatch, capsys):
    _lambda_storage(monkeypatch, "no-such-bucket-here")
    assert _run(["lambda", "deploy"]) == 1
    err = capsys.readouterr().err
    assert err == ("wrencore: error: the S3 bucket 'no-such-bucket-here' of [s3] bucket does "
                   "not exist: create it (aws s3 mb s3://no-such-bucket-here) or fix [s3] "
                   "bucket\n")


@pytest.mark.parametrize("unset,expected", [
    (("AWS_DEFAULT_REGION", "AWS_REGION"), "wrencore: error: no AWS region: set "
                                           "AWS_DEFAULT_REGION"),
    (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"),
     "wrencore: error: no AWS credentials found: set AWS_ACCESS_KEY_ID"),
])
@pytest.mark.parametrize("argv", [["lambda", "list"], ["lambda", "status"],
                                  ["demo", "--backend", "aws_lambda", "--calls", "1"]])
def test_missing_region_or_credentials_is_one_line(aws_env, monkeypatch, capsys, tmp_path,
                                                   unset, expected, argv):
    monkeypatch.setenv("WRENCORE_S3__BUCKET", "some-bucket")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    assert _run(argv) == 1
    out, err = capsys.readouterr()
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert "Traceback" not in out + err


def test_logs_show_output_and_traceback_of_stored_calls(lambda_env, monkeypatch, capsys):
    import wrencore

    def shout(x):
        print(f"hello {x}")
        if x == 1:
            raise ValueError("one is bad")
        return x

    with wrencore.Executor(backend="aws_lambda", config=lambda_env.config) as executor:
        futures = executor.map_futures(shout, range(2))
        wrencore.wait(futures)
        job_id = executor._job_ids[-1]
    monkeypatch.setenv("WRENCORE_BACKEND", "aws_lambda")
    _lambda_storage(monkeypatch, lambda_env.bucket)
    monkeypatch.setenv("WRENCORE_S3__PREFIX", "jobs")
    assert _run(["jobs"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^{job_id} .* shout +2 +1 +1 failed$", out, re.M), out
    assert _run(["logs", job_id]) == 0
    out = capsys.readouterr().out
    assert "== call 00000 (attempt 0): ok" in out and "hello 0" in out
    assert "== call 00001 (attempt 0): failed" in out and "hello 1" in out
    assert "ValueError: one is bad" in out and "Traceback" in out
    assert _run(["logs", job_id, "00000"]) == 0
    assert "00001" not in capsys.readouterr().out
    assert _run(["clean", job_id]) == 0
    assert capsys.readouterr().out.startswith("deleted 1 jobs")


def test_hello_on_lambda_times_each_step(lambda_env, monkeypatch, capsys):
    _lambda_storage(monkeypatch, lambda_env.bucket)
    assert _run(["hello", "--backend", "aws_lambda"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"  run one call … \d+\.\d\d s", out), out
    assert "hello from 'aws_lambda': 11 calls" in out
