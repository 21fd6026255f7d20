"""Fleet and queue operations in Python, shared by the backend and the command line."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from wrencore.config import Config
from wrencore_runtime import layout
from wrencore_runtime.queues import QueueMessage

from .fleet import EC2Provider
from .settings import StandaloneSettings
from .userdata import DAEMON_REQUIREMENTS, render_user_data

logger = logging.getLogger(__name__)

DEFAULT_S3_PREFIX = "wrencore"
#: Seconds the presigned URL of the daemon's runtime bundle stays valid (SigV4's maximum),
#: and how long one rendered user-data is reused for new instances.
BUNDLE_URL_LIFETIME = 7 * 24 * 3600
USER_DATA_REUSE = 24 * 3600


class Standalone:
    """The standalone fleet and its queue, as configured in ``[aws_sqs_ec2]``.

    Args:
        config: a :class:`wrencore.config.Config`, or overrides for one
            (``{"aws_sqs_ec2": {"max_instances": 4}}``); None reads file and environment.
        storage: the storage the workers will use (for their IAM policy); default: the
            ``[s3]`` table's bucket and prefix.
    """

    def __init__(self, config: Union[Config, Mapping[str, Any], None] = None,
                 storage: Any = None) -> None:
        self.config = config if isinstance(config, Config) else Config(config)
        self.settings = StandaloneSettings.from_config(self.config)
        self.storage = storage
        self._queue: Any = None
        self._provider: Optional[EC2Provider] = None
        self._fleet_lock = threading.Lock()  # one launch decision at a time
        self._user_data: Optional[Tuple[float, str]] = None
        self._key_source: Any = None

    @property
    def key_source(self) -> Any:
        """The task key (an SSM SecureString), as this client reaches it."""
        if self._key_source is None:
            from wrencore_aws.keys import client_key_source

            self._key_source = client_key_source(self.settings.task_key,
                                                 self.config.section("aws_sqs_ec2"),
                                                 self.settings.task_key_kms_key_id)
        return self._key_source

    @property
    def queue(self):
        """The SQS queue (and dead-letter queue), created on first use."""
        if self._queue is None:
            from wrencore_aws.sqs import SQSQueue

            self._queue = SQSQueue(**self.settings.queue_config(), create=True)
        return self._queue

    @property
    def provider(self) -> EC2Provider:
        if self._provider is None:
            self._provider = EC2Provider(self.config, self.settings)
        return self._provider

    def _storage_location(self):
        if self.storage is not None:
            return getattr(self.storage, "bucket", None), getattr(self.storage, "prefix", "")
        section = self.config.section("s3")
        prefix = str(section.get("prefix", DEFAULT_S3_PREFIX) or "").strip("/")
        return section.get("bucket"), (prefix + "/") if prefix else ""

    def _storage_kms_key(self) -> str:
        """The storage's SSE-KMS key ("" unless ``sse = "aws:kms"`` names one)."""
        if self.storage is not None:
            sse = getattr(self.storage, "sse", "")
            key = getattr(self.storage, "sse_kms_key_id", "")
        else:
            section = self.config.section("s3")
            sse, key = section.get("sse", "AES256"), section.get("sse_kms_key_id", "")
        return str(key or "") if sse == "aws:kms" else ""

    def _runtime_storage(self) -> Any:
        if self.storage is not None:
            return self.storage
        from wrencore.plugins import get_registry

        return get_registry().load("storage", "s3")(self.config.section("s3"))

    def daemon_runtime(self) -> Any:
        """The daemon's own runtime (``wrencore[standalone]`` at this client's versions and
        code), stored with its bundle in the job storage."""
        from wrencore.environment import Target, ensure_stored, resolver

        runtime = resolver().resolve(None, mode="explicit", base=(),
                                     requirements=list(DAEMON_REQUIREMENTS),
                                     target=Target(platform=self.settings.platform))
        ensure_stored(self._runtime_storage(), runtime, bundle=True)
        return runtime

    def user_data(self) -> str:
        """The user-data of new instances; the same text (and presigned URL) for a day."""
        cached = self._user_data
        if cached is not None and time.time() - cached[0] < USER_DATA_REUSE:
            return cached[1]
        runtime = self.daemon_runtime()
        storage = self._runtime_storage()
        url = storage.client.generate_presigned_url(
            "get_object", ExpiresIn=BUNDLE_URL_LIFETIME,
            Params={"Bucket": storage.bucket,
                    "Key": storage._full_key(layout.runtime_bundle_key(runtime.hash))})
        from wrencore_aws.keys import worker_key_spec

        self.key_source.ensure()  # the workers find a key when they start
        text = render_user_data(self.settings, self.queue.to_spec(), runtime.hash, url,
                                task_key=worker_key_spec(self.key_source),
                                manifest_sha256=runtime.manifest_sha256 or "")
        self._user_data = (time.time(), text)
        return text

    # -- operations ------------------------------------------------------------------
    def _launch(self, count: int) -> List[str]:
        if count <= 0:
            return []
        bucket, prefix = self._storage_location()
        queue_arn = self.queue.arns()[0]
        profile = self.provider.ensure_instance_profile(
            queue_arn=queue_arn, bucket=bucket, prefix=prefix,
            sse_kms_key_id=self._storage_kms_key())
        return self.provider.launch(count, user_data=self.user_data(), instance_profile=profile)

    def launch(self, count: int) -> List[str]:
        """Launch up to ``count`` more instances, never beyond ``max_instances``; their ids."""
        if count < 0:
            raise ValueError(f"count must be >= 0, not {count}")
        with self._fleet_lock:
            room = self.settings.max_instances - len(self.provider.live())
            if count > room:
                logger.warning("launching %d instead of %d instance(s): fleet %s is at most "
                               "max_instances = %d", max(room, 0), count, self.settings.fleet,
                               self.settings.max_instances)
            return self._launch(min(count, room))

    def fleet_target(self, wanted: int = 0) -> int:
        """How many instances the fleet should have for ``wanted`` messages (or the queue's
        waiting and in-flight ones, if more): one per ``messages_per_instance``, within
        ``min_instances`` and ``max_instances``."""
        s = self.settings
        depth = self.queue.depth()
        messages = max(wanted, depth.get("visible", 0) + depth.get("in_flight", 0))
        needed = -(-messages // s.messages_per_instance)
        return max(s.min_instances, min(s.max_instances, needed))

    def ensure_fleet(self, wanted: int = 0) -> List[str]:
        """Launch what the queue (or ``wanted`` messages) needs, within min/max; new ids."""
        target = self.fleet_target(wanted)
        with self._fleet_lock:
            missing = target - len(self.provider.live())
            return self._launch(missing) if missing > 0 else []

    def list(self, all_states: bool = False) -> List[Dict[str, Any]]:
        """The fleet's instances (pending and running ones unless ``all_states``)."""
        return self.provider.list() if all_states else self.provider.live()

    def terminate(self, instance_ids: Optional[List[str]] = None, *,
                  all: bool = False) -> List[str]:
        """Terminate the given instances, or with ``all`` every live one; their ids."""
        if all:
            if instance_ids:
                raise ValueError("give instance ids or all=True, not both")
            instance_ids = [i["id"] for i in self.provider.live()]
        elif not instance_ids:
            raise ValueError("name the instances to terminate, or pass all=True")
        self.provider.terminate(list(instance_ids))
        return list(instance_ids)

    def existing_queue(self):
        """The SQS queue if it exists (nothing is created); WrenError saying so if not."""
        if self._queue is not None:
            return self._queue
        from wrencore.errors import WrenError
        from wrencore_aws.sqs import SQSQueue

        queue = SQSQueue(**self.settings.queue_config(), create=False)
        try:
            queue.url
        except Exception as exc:
            if "NonExistentQueue" in str(exc) or "QueueDoesNotExist" in type(exc).__name__:
                raise WrenError(f"the SQS queue {self.settings.queue_name!r} does not exist: "
                                f"nothing has run on this fleet yet (`wrencore standalone "
                                f"launch` or a job creates it)") from None
            raise
        return queue

    def queue_size(self) -> Dict[str, int]:
        """``{"visible", "in_flight", "dead"}`` message counts (approximate); creates
        nothing."""
        queue = self.existing_queue()
        depth = queue.depth()
        depth["dead"] = len(queue.dead_letters())
        return depth

    def purge(self) -> None:
        """Delete every message of the queue and of its dead-letter queue."""
        self.existing_queue().purge()

    def dead_letters(self) -> List[QueueMessage]:
        return self.queue.dead_letters()
