"""Registers the ``gcp_pubsub`` queue and backend, the ``gcs`` storage, and the release of
an idle GCE instance that a managed instance group created.

Importing this module imports no Google SDK."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from wrencore import hookimpl

GCP_INSTALL = "pip install 'wrencore[gcp]'"


@hookimpl
def wrencore_register_queues(register) -> None:
    register("gcp_pubsub", "wrencore_gcp.queue:PubSubQueue",
             requires=("google.cloud.pubsub_v1",), install=GCP_INSTALL,
             description="Google Cloud Pub/Sub with a dead-letter topic (config [gcp_pubsub])")


@hookimpl
def wrencore_register_storages(register) -> None:
    register("gcs", "wrencore_gcp.storage:gcs_storage", requires=("google.cloud.storage",),
             install=GCP_INSTALL,
             description="Google Cloud Storage (bucket and key prefix from config [gcs])")


@hookimpl
def wrencore_register_backends(register) -> None:
    register("gcp_pubsub", "wrencore_gcp.backend:PubSubBackend",
             requires=("google.cloud.pubsub_v1",), install=GCP_INSTALL,
             description="calls through Pub/Sub to workers started with `wrencore worker "
                         "--queue gcp_pubsub` (config [gcp_pubsub])")


@hookimpl
def wrencore_release_instance(instance_id: str, config: Mapping[str, Any]) -> Optional[bool]:
    """On a GCE instance a managed instance group created (and that no other provider
    launched): delete it from its group. Elsewhere: None."""
    if config.get("provider") not in ("", None, "gce"):
        return None
    from .instance import release_managed_instance

    return release_managed_instance(config)


@hookimpl
def wrencore_register_settings(register) -> None:
    from wrencore.settings import Setting

    register("gcs", [
        Setting("bucket", "str", None, "The bucket of job data (required; it must exist).",
                required=True),
        Setting("prefix", "str", "wrencore", "Key prefix of everything wrencore stores."),
        Setting("project", "str", None, "The Google Cloud project; unset: the default "
                "credentials' project."),
    ], doc="The `gcs` storage: Google Cloud Storage.")
    register("gcp_pubsub", [
        Setting("name", "str", "wrencore", "The topic's id; the subscription and dead-letter "
                "topic derive from it."),
        Setting("project", "str", None, "The Google Cloud project; unset: the default "
                "credentials' project."),
        Setting("max_receives", "int", 5, "Delivery attempts before a message moves to the "
                "dead-letter topic.", minimum=5, maximum=100),
        Setting("ack_deadline", "int", 60, "The subscription's acknowledgement deadline, "
                "seconds.", minimum=10, maximum=600),
        Setting("create", "bool", True, "Create the topics and subscriptions if missing."),
    ], doc="The `gcp_pubsub` queue and backend: Google Cloud Pub/Sub, for workers started "
           "with `wrencore worker --queue gcp_pubsub`.")


@hookimpl
def wrencore_check_config(backend, config, report) -> None:
    if backend == "gcp_pubsub":
        from .checks import check

        check(config, report)
