"""``backend="gcp_pubsub"``: calls through Pub/Sub to workers started with
``wrencore worker --queue gcp_pubsub --storage gcs`` (or any storage both sides reach)."""

from __future__ import annotations

from wrencore_workers.backend import QueueBackend


class PubSubBackend(QueueBackend):
    """The ``queue`` backend on the ``gcp_pubsub`` queue ([gcp_pubsub]), GCS by default."""

    queue_plugin = "gcp_pubsub"
    default_storage = "gcs"
