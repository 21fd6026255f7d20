"""Functions the fault tests run on workers. Imports nothing of wrencore (it travels to
Lambda sandboxes in the job's module bundle); reaches S3 through the worker's own boto3."""

import os
import time


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def outlive_bucket(task):
    """Returns ``task["x"]`` once ``task["bucket"]`` no longer exists (at most 60 s), so
    the call ends after its job's storage is gone however slowly its sandbox started."""
    if task["x"] == 0:
        return 0
    import boto3

    s3 = boto3.client("s3")
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            s3.head_bucket(Bucket=task["bucket"])
        except Exception:  # 404: gone
            return task["x"]
        time.sleep(0.1)
    raise RuntimeError(f"bucket {task['bucket']} still exists after 60 s")


def _job_prefix(s3, bucket):
    """The key prefix of the only job in ``bucket`` (the test's own bucket)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            if item["Key"].endswith("/func.pickle"):
                return item["Key"][:-len("func.pickle")]
    raise RuntimeError(f"no job in bucket {bucket}")


def _wait_for(s3, bucket, key, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            time.sleep(0.05)
    raise RuntimeError(f"{key} did not appear")


def lie_about_status(task):
    """Call ``task["liar"]`` writes ``task["status"]`` in place of its own status — garbage
    (``"corrupt"``) or a copy of call ``task["copy_of"]``'s — and dies before its worker can
    write the real one. Every other call returns ``task["x"]``."""
    if not task.get("liar"):
        return task["x"]
    import boto3

    s3 = boto3.client("s3")
    bucket, prefix = task["bucket"], _job_prefix(boto3.client("s3"), task["bucket"])
    if task["status"] == "corrupt":
        body = b'{"job_id": "truncated'
    else:
        body = _wait_for(s3, bucket, f"{prefix}{task['copy_of']}/status.json")
    s3.put_object(Bucket=bucket, Key=f"{prefix}{task['call_id']}/status.json", Body=body)
    os._exit(17)


def forge_batch_status(task):
    """Call ``task["forger"]`` writes garbage where its chunk's batch status through call
    ``task["through"]`` goes, and kills its sandbox (the chunk's later calls never run);
    every other call returns ``task["x"]``."""
    if not task.get("forger"):
        return task["x"]
    import boto3

    s3 = boto3.client("s3")
    prefix = _job_prefix(s3, task["bucket"])
    s3.put_object(Bucket=task["bucket"], Body=b'{"statuses": [trunc',
                  Key=f"{prefix}{task['call_id']}/batch-status-to-{task['through']}.json")
    os._exit(17)


def record_run(task):
    """Append this process's pid to the call's marker; hold the first run ``task["hold"]`` s."""
    path = os.path.join(task["dir"], f"run-{task['x']}")
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        runs = f.read().split()
    if len(runs) == 1:
        time.sleep(task["hold"])
    return task["x"] * 10
