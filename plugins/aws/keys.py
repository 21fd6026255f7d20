"""The task key on AWS: an SSM Parameter Store SecureString (see ``wrencore_runtime.auth``).

Clients create it on first use and sign with it; workers' roles may only read it (the
statement of :func:`key_read_statement`). Rotate it with ``wrencore keys rotate``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from .ssm import SsmKeySource

from .clients import make_client

#: The parameter that holds the task key ring unless a backend's ``task_key`` names another.
DEFAULT_PARAMETER = "/wrencore/task-key"


def parameter_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"


def key_read_statement(region: str, account: str, name: str) -> Dict[str, Any]:
    """The IAM statement a workers' role needs to read the task key, and nothing more."""
    return {"Sid": "TaskKey", "Effect": "Allow", "Action": "ssm:GetParameter",
            "Resource": parameter_arn(region, account, name)}


def client_key_source(name: str, section: Optional[Mapping[str, Any]] = None,
                      kms_key_id: str = "") -> SsmKeySource:
    """The task key as a client reaches it (honouring ``endpoint_url``/``region``)."""
    client = make_client("ssm", section)
    return SsmKeySource(name, region=client.meta.region_name, kms_key_id=kms_key_id,
                        client=client)


def worker_key_spec(source: SsmKeySource) -> Dict[str, Any]:
    """What workers are told: where the key is (its name and region), never the key."""
    return SsmKeySource(source.name, region=source.region).to_spec()
