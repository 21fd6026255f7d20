"""``wrencore config check --backend gcp_pubsub``: credentials, project, bucket and topic,
read-only (the topic and subscription are created by the first job or worker)."""

from __future__ import annotations

import os
from typing import Callable

from wrencore.config import Config


def _one_line(exc: BaseException) -> str:
    from wrencore.cli import describe_error

    return describe_error(exc) or f"{type(exc).__name__}: {exc}"


def check(config: Config, report: Callable[..., None]) -> None:
    from .queue import PubSubQueue, default_project

    section = dict(config.section("gcp_pubsub"))
    emulated = bool(os.environ.get("PUBSUB_EMULATOR_HOST"))
    if not emulated:
        try:
            import google.auth

            google.auth.default()
            report("credentials", True, "Google default credentials")
        except Exception as exc:
            report("credentials", False, _one_line(exc))
            return
    try:
        project = section.get("project") or default_project()
        report("project", True, str(project))
    except Exception as exc:
        report("project", False, _one_line(exc))
        return
    storage_name = str(config.get("storage") or "gcs")
    if storage_name == "gcs":
        _check_bucket(config, report)
    queue = PubSubQueue(**dict(section, project=project, create=False))
    try:
        queue.publisher.get_topic(request={"topic": queue.topic})
        report("topic", True, queue.topic)
    except Exception as exc:
        if type(exc).__name__ == "NotFound":
            report("topic", True, f"{queue.topic} does not exist yet; the first job or "
                                  f"`wrencore worker --queue gcp_pubsub` creates it")
        else:
            report("topic", False, _one_line(exc))


def _check_bucket(config: Config, report: Callable[..., None]) -> None:
    from .storage import gcs_storage

    section = config.section("gcs")
    if not section.get("bucket"):
        report("bucket", False, "no bucket: set [gcs] bucket = \"NAME\" (create one with "
                                "`gcloud storage buckets create gs://NAME`)")
        return
    try:
        storage = gcs_storage(section)
        if not storage.bucket.exists():
            report("bucket", False, f"bucket {section['bucket']!r} does not exist: create it "
                                    f"(`gcloud storage buckets create gs://{section['bucket']}`)"
                                    f" or fix [gcs] bucket")
            return
        probe = ".wrencore-config-check"
        storage.put(probe, b"ok")
        storage.get(probe)
        storage.delete_prefix(probe)
    except Exception as exc:
        report("bucket", False, _one_line(exc))
        return
    report("bucket", True, f"gs://{storage.bucket_name}/{storage.prefix} (write, read, delete)")
