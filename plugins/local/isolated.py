"""``runtime="isolated"``: local workers in an environment built from the job's runtime.

The environment is built the way a cloud worker builds it — only from the wheels the client
stored in the job's storage — so a runtime that works here is complete on the cloud too.
Environments live under ``$WRENCORE_CACHE/envs`` (or ``[local] env_dir``), one per runtime
hash, and are evicted by age and total size (``[local] env_max_age``, ``env_max_bytes``).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from wrencore.config import Section
from wrencore.environment import cache_dir
from wrencore_runtime.environment import build_environment, env_python, evict_environments
from wrencore_runtime.storage import Storage

logger = logging.getLogger(__name__)


class IsolatedEnvironments:
    def __init__(self, section: Section, storage: Storage) -> None:
        self.root = section.str("env_dir") or cache_dir("envs")
        self.max_age = section.float("env_max_age", 7 * 24 * 3600.0)
        self.max_bytes = section.int("env_max_bytes", 5 * 1024 ** 3)
        self.storage = storage

    def python_for(self, runtime: Dict[str, Any], in_use: Optional[set] = None) -> str:
        """The interpreter of the runtime's environment, built from storage if missing."""
        env_dir = build_environment(self.storage, runtime["hash"], self.root,
                                    manifest_sha256=runtime.get("manifest_sha256"))
        evict_environments(self.root, max_age=self.max_age, max_bytes=self.max_bytes,
                           keep={runtime["hash"], *(in_use or ())})
        return env_python(env_dir)
