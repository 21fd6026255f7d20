"""Installing the user's local modules that travel with a job.

The client zips the source of modules its function needs that the worker cannot import (a
``helper.py`` next to the script, a package in the project tree). A worker unpacks each
bundle once into a cache directory named by its content hash and puts it first on
``sys.path`` while that job's calls run.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Optional

# zipfile, shutil and tempfile (with the compression modules they pull in) are imported
# only when a job ships modules: most never do, and every worker would pay for them.

logger = logging.getLogger(__name__)


def _cache_root() -> str:
    import tempfile

    return os.environ.get("WRENCORE_MODULE_CACHE") or os.path.join(
        tempfile.gettempdir(), f"wrencore-modules-{os.getuid() if hasattr(os, 'getuid') else 0}"
    )


class ModuleInstaller:
    """Keeps exactly one job's module bundle active in this process."""

    def __init__(self) -> None:
        self.active_hash: Optional[str] = None
        self.active_path: Optional[str] = None

    def activate(self, bundle: Optional[bytes], bundle_hash: Optional[str]) -> None:
        if bundle_hash == self.active_hash:
            return
        self._deactivate()
        if not bundle:
            return
        path = os.path.join(_cache_root(), bundle_hash)
        if not os.path.isdir(path):
            import io
            import shutil
            import tempfile
            import zipfile

            os.makedirs(_cache_root(), exist_ok=True)
            staging = tempfile.mkdtemp(dir=_cache_root(), prefix=".unpack-")
            with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
                archive.extractall(staging)
            try:
                os.rename(staging, path)
            except OSError:  # another worker unpacked the same bundle first
                shutil.rmtree(staging, ignore_errors=True)
        sys.path.insert(0, path)
        importlib.invalidate_caches()
        self.active_hash, self.active_path = bundle_hash, path
        logger.debug("activated module bundle %s", bundle_hash)

    def _deactivate(self) -> None:
        if self.active_path is None:
            return
        path = self.active_path
        if path in sys.path:
            sys.path.remove(path)
        prefix = path + os.sep
        for name, module in list(sys.modules.items()):
            filename = getattr(module, "__file__", None) or ""
            if filename.startswith(prefix):
                del sys.modules[name]
        importlib.invalidate_caches()
        self.active_hash = self.active_path = None
