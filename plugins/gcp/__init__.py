"""wrencore on Google Cloud: the ``gcp_pubsub`` queue and backend, the ``gcs`` storage."""
