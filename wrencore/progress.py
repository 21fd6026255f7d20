"""Progress bars while the user waits on futures.

``get_all_results``, ``wait``, ``as_completed`` and ``Executor.map`` show a bar of the
futures done (``tqdm.auto``: a text bar in a terminal, a widget in a notebook) while they
block. It is on when the output is a terminal or a notebook and off otherwise (a script
piped to a file, a test run), and ``progress=True``/``False`` or the top-level config key
``progress`` (``WRENCORE_PROGRESS``) forces it either way. Nothing is shown when every
future is already done, and a bar is closed when the wait ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import sys
import threading
from typing import Any, Iterable, Iterator, Optional, Sequence

from .config import Config, Section
from .errors import ConfigError

_configured: Optional[Section] = None
_configured_lock = threading.Lock()


def _default_settings() -> Section:
    """The top-level configuration (file and environment), read once per process."""
    global _configured
    with _configured_lock:
        if _configured is None:
            try:
                _configured = Config().top()
            except ConfigError:
                _configured = Section("", {})  # reported where the executor is created
        return _configured


def interactive_console() -> bool:
    """Whether a person is watching: stderr is a terminal, or this runs in a notebook."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if shell is not None and "IPKernelApp" in getattr(shell, "config", {}):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def enabled(progress: Optional[bool], settings: Optional[Section] = None) -> bool:
    """Whether to show a bar: ``progress`` if given, else config ``progress``, else whether
    a person is watching (:func:`interactive_console`)."""
    if progress is not None:
        return bool(progress)
    configured = (settings if settings is not None else _default_settings()).bool("progress")
    if configured is not None:
        return configured
    return interactive_console()


class Bar:
    """Counts futures as they finish (from the backends' threads) on a tqdm bar."""

    def __init__(self, total: Optional[int], desc: str = "wrencore") -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="call", dynamic_ncols=True,
                         leave=False, file=sys.stderr)
        self._lock = threading.Lock()
        self._closed = False

    def watch(self, futures: Iterable[concurrent.futures.Future]) -> None:  # type: ignore[type-arg]
        """Count each of ``futures`` when it finishes (at once, for those already done)."""
        for future in futures:
            future.add_done_callback(self._one_done)

    def grow(self, count: int) -> None:
        """More futures to wait for (a streamed map read more inputs)."""
        with self._lock:
            if not self._closed:
                self._bar.total = (self._bar.total or 0) + count
                self._bar.refresh()

    def _one_done(self, _: Any) -> None:
        with self._lock:
            if not self._closed:
                self._bar.update(1)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._bar.close()


def start(futures: Sequence[concurrent.futures.Future], progress: Optional[bool],  # type: ignore[type-arg]
          settings: Optional[Section] = None) -> Optional[Bar]:
    """A bar counting ``futures``, or None when bars are off or every one is done.

    The bar holds no reference to the futures; close it when the wait ends.
    """
    if not futures or not enabled(progress, settings) or all(f.done() for f in futures):
        return None
    bar = Bar(len(futures))
    bar.watch(futures)
    return bar


@contextlib.contextmanager
def bar_for(futures: Sequence[concurrent.futures.Future], progress: Optional[bool],  # type: ignore[type-arg]
            settings: Optional[Section] = None) -> Iterator[Optional[Bar]]:
    """:func:`start` for the block; the bar is closed when it ends."""
    bar = start(futures, progress, settings)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
