"""Run CPython's own concurrent.futures executor tests against wrencore, beside the stdlib.

Obtains ``test_concurrent_futures.py`` for the running Python at run time from Debian's
``libpython3.X-testsuite`` package (``apt-get download`` into a temp dir, ``dpkg-deb -x``;
nothing of it is copied into the project), then runs each executor test class twice: with
CPython's ``ProcessPoolSpawnMixin`` (the reference) and with a mixin whose
``executor_type`` builds ``wrencore.Executor(backend="local")``. Each test has a time
limit (SIGALRM), so a hang is an error, not a stuck run. Prints one table per executor
(pass/fail/error/skip per class) and the tests not applicable to wrencore, with a reason.

    python benchmarks/cpython_futures_suite.py [--timeout 60] [--classes Wait,AsCompleted]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import unittest
from typing import Dict, List, Tuple

import wrencore

#: The mixins of the suite that hold executor tests (ThreadPool-only classes are left out).
TEST_MIXINS = ["InitializerMixin", "FailingInitializerMixin", "ProcessPoolShutdownTest",
               "WaitTests", "AsCompletedTests", "ProcessPoolExecutorTest",
               "ExecutorDeadlockTest"]

_PRIVATE = "reads ProcessPoolExecutor's private attributes ({})"
_BY_NAME = ("runs a child script that imports the executor class by name from "
            "concurrent.futures")
#: test name -> why it cannot apply to wrencore.Executor (it still runs on the reference).
NOT_APPLICABLE: Dict[str, str] = {
    "test_processes_terminate": _PRIVATE.format("_processes"),
    "test_context_manager_shutdown": _PRIVATE.format("_processes"),
    "test_del_shutdown": _PRIVATE.format("_call_queue, _executor_manager_thread, _processes"),
    "test_shutdown_no_wait": _PRIVATE.format("_call_queue, _executor_manager_thread, "
                                             "_processes"),
    "test_killed_child": _PRIVATE.format("_processes"),
    "test_saturation": _PRIVATE.format("_max_workers, _processes"),
    "test_idle_process_reuse_one": _PRIVATE.format("_max_workers, _processes"),
    "test_idle_process_reuse_multiple": _PRIVATE.format("_max_workers, _processes"),
    "test_max_tasks_per_child": _PRIVATE.format("_processes"),
    "test_max_tasks_per_child_defaults_to_spawn_context": _PRIVATE.format("_mp_context"),
    "test_shutdown_deadlock_pickle": _PRIVATE.format("_executor_manager_thread"),
    "test_interpreter_shutdown": _BY_NAME,
    "test_submit_after_interpreter_shutdown": _BY_NAME,
    "test_hang_gh83386": _BY_NAME,
    "test_ressources_gced_in_workers": "passes a multiprocessing Manager Event to the "
                                       "worker, which only processes started by "
                                       "multiprocessing can authenticate to",
    "test_traceback": "asserts the exact private class concurrent.futures.process."
                      "_RemoteTraceback; wrencore's cause is wrencore.futures.RemoteTraceback "
                      "with the same .tb",
}
#: (class, test) -> reason, where the name alone is ambiguous.
NOT_APPLICABLE_IN = {
    ("FailingInitializerMixin", "test_initializer"): "passes a multiprocessing.Queue in "
        "initargs, which only processes started by multiprocessing can share, and reads "
        "the private _broken attribute",
}


def fetch_suite(workdir: str) -> str:
    """Path of test_concurrent_futures.py for this Python, from Debian's testsuite package."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    package = f"libpython{version}-testsuite"
    subprocess.run(["apt-get", "download", package], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (deb,) = glob.glob(os.path.join(workdir, f"{package}_*.deb"))
    root = os.path.join(workdir, "root")
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return os.path.join(root, "usr", "lib", f"python{version}", "test",
                        "test_concurrent_futures.py")


def load_module(path: str):
    # Importable by name, so the reference's spawned workers can unpickle its functions.
    sys.path.insert(0, os.path.dirname(path))
    return importlib.import_module("test_concurrent_futures")


class WrencoreLocalExecutor(wrencore.Executor):
    """``ProcessPoolExecutor``'s signature over ``wrencore.Executor(backend="local")``."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None):
        super().__init__(backend="local", max_workers=max_workers, mp_context=mp_context,
                         initializer=initializer, initargs=initargs,
                         max_tasks_per_child=max_tasks_per_child)


def build_classes(module) -> Tuple[List[type], List[type]]:
    class WrencoreMixin(module.ExecutorMixin):
        executor_type = WrencoreLocalExecutor
        ctx = "spawn"

        def get_context(self):
            return multiprocessing.get_context("spawn")

    reference, wrencore_classes = [], []
    for name in TEST_MIXINS:
        mixin = getattr(module, name)
        reference.append(type(f"Stdlib{name}", (mixin, module.ProcessPoolSpawnMixin,
                                                module.BaseTestCase), {}))
        wrencore_classes.append(type(f"Wrencore{name}", (mixin, WrencoreMixin,
                                                         module.BaseTestCase), {}))
    return reference, wrencore_classes


class _Timeout(Exception):
    pass


def not_applicable(mixin: str, name: str) -> str:
    return NOT_APPLICABLE_IN.get((mixin, name)) or NOT_APPLICABLE.get(name, "")


def run_class(cls: type, timeout: int, skip_not_applicable: bool) -> Dict[str, int]:
    counts = {"pass": 0, "fail": 0, "error": 0, "skip": 0}
    names = unittest.TestLoader().getTestCaseNames(cls)
    mixin = cls.__name__.replace("Wrencore", "", 1).replace("Stdlib", "", 1)
    for name in names:
        if skip_not_applicable and not_applicable(mixin, name):
            continue
        result = unittest.TestResult()

        def expire(signum, frame):
            raise _Timeout(f"{cls.__name__}.{name} exceeded {timeout} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(timeout)
        try:
            cls(name).run(result)
        except _Timeout as exc:
            result.errors.append((name, str(exc)))
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        if result.errors:
            counts["error"] += 1
            outcome = "ERROR"
        elif result.failures:
            counts["fail"] += 1
            outcome = "FAIL"
        elif result.skipped:
            counts["skip"] += 1
            outcome = "skip"
        else:
            counts["pass"] += 1
            outcome = "ok"
        if outcome in ("ERROR", "FAIL"):
            detail = (result.errors or result.failures)[0][1].strip().splitlines()[-1]
            print(f"  {outcome} {cls.__name__}.{name}: {detail[:160]}", file=sys.stderr)
    return counts


def print_table(title: str, rows: List[Tuple[str, Dict[str, int]]]) -> None:
    print(f"\n{title}")
    print(f"{'class':<28} {'pass':>5} {'fail':>5} {'error':>6} {'skip':>5}")
    total = {"pass": 0, "fail": 0, "error": 0, "skip": 0}
    for name, counts in rows:
        print(f"{name:<28} {counts['pass']:>5} {counts['fail']:>5} {counts['error']:>6} "
              f"{counts['skip']:>5}")
        for key in total:
            total[key] += counts[key]
    print(f"{'total':<28} {total['pass']:>5} {total['fail']:>5} {total['error']:>6} "
          f"{total['skip']:>5}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=int, default=60, help="seconds per test")
    parser.add_argument("--classes", default="", help="comma-separated subset of "
                        + ", ".join(TEST_MIXINS))
    args = parser.parse_args(argv)
    if args.classes:
        wanted = set(args.classes.split(","))
        TEST_MIXINS[:] = [m for m in TEST_MIXINS if m in wanted or m.replace("Mixin", "")
                          .replace("Tests", "").replace("Test", "") in wanted]
    with tempfile.TemporaryDirectory(prefix="cpython-futures-") as workdir:
        module = load_module(fetch_suite(workdir))
        reference, ours = build_classes(module)
        ref_rows = [(c.__name__[len("Stdlib"):], run_class(c, args.timeout, False))
                    for c in reference]
        our_rows = [(c.__name__[len("Wrencore"):], run_class(c, args.timeout, True))
                    for c in ours]
        present = sorted({(c.__name__[len("Wrencore"):], name) for c in ours
                          for name in unittest.TestLoader().getTestCaseNames(c)})
    print_table("ProcessPoolExecutor (spawn), the reference", ref_rows)
    print_table("wrencore.Executor(backend='local')", our_rows)
    print("\nNot applicable to wrencore (run on the reference only):")
    for mixin, name in present:
        reason = not_applicable(mixin, name)
        if reason:
            print(f"  {mixin}.{name}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
