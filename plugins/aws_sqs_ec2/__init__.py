"""Standalone workers on AWS: an SQS task queue and an EC2 fleet whose instances run the
wrencore daemon under supervisord, bootstrapped by cloud-init, logging to CloudWatch.

``from wrencore_aws_sqs_ec2 import Standalone`` gives the fleet operations in Python
(``launch``, ``list``, ``terminate``, ``queue_size``, ``purge``); the same are on the command
line as ``wrencore standalone …``. Importing this package does not import boto3.
"""

from .api import Standalone

__all__ = ["Standalone"]
