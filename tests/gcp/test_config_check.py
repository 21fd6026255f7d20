"""``wrencore config check --backend gcp_pubsub`` against the Pub/Sub and GCS emulators."""

from __future__ import annotations

from wrencore.cli import main


def test_config_check_names_what_is_missing(pubsub_env, gcs_bucket, monkeypatch, capsys):
    monkeypatch.setenv("WRENCORE_GCP_PUBSUB__NAME", "checked-tasks")
    monkeypatch.setenv("WRENCORE_GCS__BUCKET", gcs_bucket + "-missing")
    assert main(["config", "check", "--backend", "gcp_pubsub"]) == 1
    out = capsys.readouterr().out
    assert f"ok      project: {pubsub_env}" in out
    assert f"MISSING bucket: bucket '{gcs_bucket}-missing' does not exist" in out
    assert f"projects/{pubsub_env}/topics/checked-tasks does not exist yet" in out
    monkeypatch.setenv("WRENCORE_GCS__BUCKET", gcs_bucket)
    assert main(["config", "check", "--backend", "gcp_pubsub"]) == 0
    out = capsys.readouterr().out
    assert f"ok      bucket: gs://{gcs_bucket}/wrencore/ (write, read, delete)" in out
    assert "all 3 checks passed" in out
