"""What the trust tests share: moto with IAM enforcement (tests/servers/moto_iam.py), IAM
users holding exactly one policy, and the check that a call was denied."""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.servers import procs
from tests.servers.moto_server import MotoServer

ACCOUNT = "123456789012"
REGION = "us-east-1"


class EnforcingMoto(MotoServer):
    def __init__(self, log_path: str):
        self.log_path = log_path
        super().__init__(log_path)

    def denials(self) -> list:
        """What moto denied so far, one line each (logged by the shim)."""
        with open(self.log_path, errors="replace") as log:
            return [line.strip() for line in log if line.startswith("moto_iam: denied")]

    def _start(self) -> None:
        shim = os.path.join(os.path.dirname(procs.__file__), "moto_iam.py")
        self.proc = procs.start([sys.executable, shim, "-H", "127.0.0.1", "-p", str(self.port)],
                                stdout=self._log, stderr=self._log, env=dict(os.environ))
        procs.wait_until(lambda: procs.port_open(self.port), 30, "moto server", self.proc)

    def enforce(self, on: bool = True) -> None:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", method="POST",
                                     data=b"0" if on else b"inf",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()


def client(service, creds, endpoint):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds.get("SessionToken"))


def user(iam, name, policy):
    """An IAM user holding exactly ``policy``; its access key."""
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    return iam.create_access_key(UserName=name)["AccessKey"]


ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def denied(call):
    with pytest.raises(ClientError) as caught:
        call()
    code = caught.value.response["Error"]["Code"]
    # SQS's query protocol and Lambda reach boto3 as a bare 403 whose body says AccessDenied.
    assert code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation") or (
        code == "403" and "AccessDenied" in str(caught.value)), str(caught.value)
