"""The ``queue`` backend: calls go to a queue that workers started elsewhere work off.

Start workers on any machines with ``wrencore worker --queue NAME --storage NAME``, then::

    wrencore.map(f, xs, backend="queue", config={"queue": {"name": "gcp_pubsub"},
                                                "gcp_pubsub": {"name": "my-topic"}})

``[queue] name`` chooses the queue plugin; that plugin's own table configures it.
``backend="gcp_pubsub"`` is this backend with the Pub/Sub queue and GCS as its default
storage. The workers' storage must be the job's (``storage=`` here); results come back
through it, and a :class:`~wrencore.watcher.StatusWatcher` completes the futures. Task
messages are signed with the key in ``[queue] key_file`` (default: ``$WRENCORE_TASK_KEY_FILE``
or ``~/.config/wrencore/task-key.json``, created on first use, mode 0600); start the workers
with the same file (``wrencore worker --key-file``), copied to their machines privately. The
backend launches nothing: the workers' own environment runs the calls. Calls whose message
reached the dead-letter queue (it kept killing its worker) fail with
:class:`~wrencore.errors.WorkerCrashedError`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional

from wrencore.backends import Backend, Call, dead_letter_calls, refused_error, task_message_bodies
from wrencore.config import Config
from wrencore.errors import ConfigError, WorkerCrashedError
from wrencore.futures import Future, claim
from wrencore.watcher import StatusWatcher, watcher_options
from wrencore_runtime.auth import FileKeySource, Signer, default_key_file
from wrencore_runtime.storage import Storage

logger = logging.getLogger(__name__)

#: Task messages stay below this size (SQS's limit is 256 KiB); larger chunks are split.
MESSAGE_LIMIT = 200 * 1024
#: Seconds between peeks at the dead-letter queue while calls are pending.
DEAD_LETTER_CHECK_INTERVAL = 2.0


class QueueBackend(Backend):
    #: The queue plugin this backend always uses (None: ``[queue] name``).
    queue_plugin: Optional[str] = None
    default_storage = "localfs"
    args_inline_limit = 32 * 1024
    result_inline_limit = 64 * 1024
    default_chunksize = 1
    default_runtime = None

    def __init__(self, config: Config, storage: Storage) -> None:
        super().__init__(config, storage)
        from wrencore.plugins import get_registry

        registry = get_registry()
        self.queue_name = self.queue_plugin or config.section("queue").get("name")
        if not self.queue_name:
            raise ConfigError(
                "the queue backend needs a queue: set [queue] name = \"...\" (one of: "
                f"{', '.join(registry.names('queue'))}), as workers were started with "
                "`wrencore worker --queue NAME`")
        queue_cls = registry.load("queue", self.queue_name)
        self.queue = queue_cls(**dict(config.section(self.queue_name)))
        key_file = config.section("queue").get("key_file") or default_key_file()
        self.signer = Signer(FileKeySource(str(key_file)))
        self.watcher = StatusWatcher(storage, deadline_check=self._dead_letter_check,
                                     **watcher_options(config))
        self._dead: Dict[str, Dict[str, int]] = {}
        self._dead_lock = threading.Lock()
        self._last_dead_check = -float("inf")

    def invoke(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        live = [c for c in calls if claim(c.future)]
        if not live:
            return
        self.watcher.watch(job["job_id"], {c.call_id: c.future for c in live})
        try:
            bodies = task_message_bodies(job, live, max(1, int(chunksize or 1)), MESSAGE_LIMIT,
                                         f"the limit of {MESSAGE_LIMIT}", self.signer)
            self.queue.send_batch([body for body, _ in bodies])
        except Exception as exc:
            for call in live:
                call.future.fail(exc)

    # -- dead letters ----------------------------------------------------------------
    def _refresh_dead_letters(self) -> None:
        with self._dead_lock:
            if time.monotonic() - self._last_dead_check < DEAD_LETTER_CHECK_INTERVAL:
                return
            self._last_dead_check = time.monotonic()
        try:
            letters = self.queue.dead_letters()
        except Exception as exc:
            logger.warning("could not read the dead-letter queue: %s", exc)
            return
        dead: Dict[str, Dict[str, Any]] = {}
        for letter in letters:
            for job_id, call_id, _, refused in dead_letter_calls(letter.body, self.signer):
                dead.setdefault(job_id, {})[call_id] = refused or letter.receive_count
        with self._dead_lock:
            self._dead = dead

    def _dead_letter_check(self, future: Future) -> Optional[BaseException]:
        self._refresh_dead_letters()
        with self._dead_lock:
            receives = self._dead.get(future.job_id, {}).get(future.call_id)
        if receives is None:
            return None
        if isinstance(receives, str):
            return refused_error(future, receives, f"of {self.queue!r}")
        return WorkerCrashedError(
            f"call {future.call_id} of job {future.job_id} never reported a result: its "
            f"message was delivered {receives} times without being completed and moved to "
            f"the dead-letter queue of {self.queue!r}. The call probably kills its worker "
            f"process (os._exit, a segfault, running out of memory); its message is still "
            f"there for inspection.")

    def shutdown(self, wait: bool = True) -> None:
        if wait:
            deadline = time.monotonic() + 3600
            while self.watcher.pending_count() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.watcher.stop()
