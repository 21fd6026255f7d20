"""Standalone workers on AWS: an SQS task queue and an EC2 fleet whose instances run the
wrencore daemon under supervisord, bootstrapped by cloud-init, logging to CloudWatch.

``from wrencore_aws_sqs_ec2 import Standalone`` gives the fleet operations in Python
(``launch``, ``list``, ``terminate``, ``queue_size``, ``purge``); the same are on the command
line as ``wrencore standalone …``. Importing this package does not import boto3.
"""

from typing import Any

__all__ = ["Standalone"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the plugin's entry point is in this package, and every
    # executor (of any backend) loads it, which must not import the fleet's machinery.
    if name == "Standalone":
        from .api import Standalone

        return Standalone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
