"""Giving an idle GCE instance back to its managed instance group (worker side).

A worker on a Compute Engine instance that a managed instance group (MIG) created learns
from the metadata server who it is — ``project/project-id``, ``instance/zone``,
``instance/name`` — and which group made it: the ``created-by`` attribute,
``projects/NUMBER/zones/ZONE/instanceGroupManagers/NAME`` (``regions/REGION/…`` for a
regional group). Releasing it calls the Compute API's
``instanceGroupManagers.deleteInstances`` for this one instance, with the instance service
account's token from the metadata server: the group deletes the instance and lowers its
target size by one, so it does not start a replacement. The service account needs
``compute.instanceGroupManagers.update`` on the group (e.g. ``roles/compute.instanceAdmin.v1``).

Only the standard library is used: the code runs on the worker, and only on GCE.
``GCE_METADATA_HOST`` (as Google's libraries honour it) points at another metadata server.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping, Optional

logger = logging.getLogger(__name__)

METADATA_HOST = "metadata.google.internal"
COMPUTE_URL = "https://compute.googleapis.com/compute/v1"
#: What the DMI product name of a Compute Engine machine says (checked before any request).
GCE_PRODUCT_FILE = "/sys/class/dmi/id/product_name"
METADATA_TIMEOUT = 2.0
COMPUTE_TIMEOUT = 30.0


class MetadataError(RuntimeError):
    """The metadata server could not be reached, or lacks the value asked for."""


def on_gce() -> bool:
    """Whether this could be a Compute Engine machine (a metadata host named, or the DMI
    product name), so that no other machine ever waits on a metadata request."""
    if os.environ.get("GCE_METADATA_HOST"):
        return True
    try:
        with open(GCE_PRODUCT_FILE, encoding="ascii", errors="replace") as f:
            return "Google" in f.read()
    except OSError:
        return False


def metadata(path: str, host: Optional[str] = None) -> str:
    """One value of the metadata server (``computeMetadata/v1/{path}``)."""
    host = host or os.environ.get("GCE_METADATA_HOST") or METADATA_HOST
    request = urllib.request.Request(f"http://{host}/computeMetadata/v1/{path}",
                                     headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=METADATA_TIMEOUT) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise MetadataError(f"metadata {path}: {exc}") from exc


@dataclass(frozen=True)
class ManagedInstance:
    project: str
    zone: str
    name: str
    #: ``projects/…/zones|regions/…/instanceGroupManagers/NAME`` from ``created-by``.
    group: str

    @property
    def group_url_path(self) -> str:
        """The group's path under the Compute API, in this instance's project."""
        _projects, _number, scope, location, _kind, name = self.group.split("/")
        return f"projects/{self.project}/{scope}/{location}/instanceGroupManagers/{name}"

    @property
    def instance_path(self) -> str:
        return f"projects/{self.project}/zones/{self.zone}/instances/{self.name}"


def managed_instance(host: Optional[str] = None) -> Optional[ManagedInstance]:
    """This instance and its managed group, or None when no MIG created it (or this is no
    GCE instance)."""
    if not on_gce():
        return None
    try:
        created_by = metadata("instance/attributes/created-by", host)
    except MetadataError as exc:
        logger.debug("not a managed GCE instance: %s", exc)
        return None
    parts = created_by.strip().split("/")
    if (len(parts) != 6 or parts[0] != "projects" or parts[2] not in ("zones", "regions")
            or parts[4] != "instanceGroupManagers"):
        return None
    return ManagedInstance(project=metadata("project/project-id", host).strip(),
                           zone=metadata("instance/zone", host).strip().rsplit("/", 1)[-1],
                           name=metadata("instance/name", host).strip(),
                           group=created_by.strip())


def delete_from_group(instance: ManagedInstance, compute_url: str = COMPUTE_URL,
                      host: Optional[str] = None) -> Mapping[str, Any]:
    """Ask the group to delete ``instance``; returns the Compute API's operation."""
    token = json.loads(metadata("instance/service-accounts/default/token", host))
    url = f"{compute_url.rstrip('/')}/{instance.group_url_path}/deleteInstances"
    body = json.dumps({"instances": [instance.instance_path]}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token['access_token']}",
        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=COMPUTE_TIMEOUT) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise RuntimeError(
            f"deleting instance {instance.name} from its group {instance.group} failed: "
            f"HTTP {exc.code}: {detail} (the instance's service account needs "
            f"compute.instanceGroupManagers.update on the group)") from exc


def release_managed_instance(config: Mapping[str, Any]) -> Optional[bool]:
    """Delete this instance from the managed group that created it; None when it is no
    managed GCE instance (another plugin, or the plain-machine default, decides)."""
    instance = managed_instance()
    if instance is None:
        return None
    provider_config = config.get("provider_config") or {}
    operation = delete_from_group(instance, str(provider_config.get("compute_url")
                                                 or COMPUTE_URL))
    logger.info("asked managed instance group %s to delete instance %s (operation %s)",
                instance.group, instance.name, operation.get("name", "?"))
    return True
