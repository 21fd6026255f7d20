"""The task key ring in SSM Parameter Store (worker half; also used by clients).

Clients create the key ring on first use and sign with it (``wrencore_aws.keys``); workers'
roles may only ``ssm:GetParameter`` it. Workers rebuild this key source from its spec
(``{"class": "wrencore_aws.ssm:SsmKeySource", "config": {"name": ..., "region": ...}}``,
:func:`wrencore_runtime.auth.key_source_from_spec`), so the Lambda zip ships this module.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from wrencore_runtime.auth import KeyRing, KeySource


class SsmKeySource(KeySource):
    """A key ring in an SSM Parameter Store SecureString (encrypted with ``kms_key_id``, or
    the account's ``aws/ssm`` key). Workers' roles get ``ssm:GetParameter`` on it alone."""

    def __init__(self, name: str, region: str = "", kms_key_id: str = "",
                 client: Any = None) -> None:
        self.name, self.region, self.kms_key_id = name, region, kms_key_id
        self.config = {"name": name, "region": region}
        if kms_key_id:
            self.config["kms_key_id"] = kms_key_id
        self._client: Any = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("ssm", region_name=self.region or None)
        return self._client

    def load(self) -> Optional[KeyRing]:
        try:
            found = self.client.get_parameter(Name=self.name, WithDecryption=True)
        except self.client.exceptions.ParameterNotFound:
            return None
        return KeyRing.from_json(found["Parameter"]["Value"])

    def store(self, ring: KeyRing) -> None:
        options: Dict[str, Any] = {"KeyId": self.kms_key_id} if self.kms_key_id else {}
        self.client.put_parameter(Name=self.name, Value=ring.to_json(), Type="SecureString",
                                  Overwrite=True, Description="wrencore task key ring",
                                  **options)

    def ensure(self) -> KeyRing:
        ring = self.load()
        if ring is not None:
            return ring
        options: Dict[str, Any] = {"KeyId": self.kms_key_id} if self.kms_key_id else {}
        try:  # create-only, so two clients starting at once agree on one key
            self.client.put_parameter(Name=self.name, Value=KeyRing.generate().to_json(),
                                      Type="SecureString", Overwrite=False,
                                      Description="wrencore task key ring", **options)
        except self.client.exceptions.ParameterAlreadyExists:
            pass
        ring = self.load()
        assert ring is not None
        return ring
