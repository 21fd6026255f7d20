"""Worker environments built from a runtime the client stored, and the check that a worker
runs the job's runtime.

A *runtime* (see ``wrencore.environment`` on the client) is a locked set of distributions
for one Python minor version and platform, named by its hash. The client stores it once::

    runtimes/{hash}/wheels/{wheel file}     one wheel per distribution
    runtimes/{hash}/runtime.json            the manifest (written last): python, platform,
                                            distributions {name: version}, wheels [...]

A worker builds an environment only from those objects — never from a package index — in
a directory named by the hash, unpacking the wheels with the standard library (a wheel is
a zip of what goes into site-packages). It checks each object before using it: the
manifest has the SHA-256 the signed job carries (``runtime.manifest_sha256``) and describes
the runtime the job names (its identity hashes to the runtime hash), and each wheel has the
SHA-256 the manifest records; anything else raises :class:`IntegrityError` naming the
object, before anything of it is installed. Environments are built once, cached and evicted
by age and total size. :func:`environment_mismatch` is the check every call makes before
it runs: the job's distributions, at the job's versions, are what this process imports.

Also the child-process protocol a worker uses to run a job in another runtime's
environment (:class:`EnvironmentProcess` and ``python -m wrencore_runtime.environment serve``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from importlib import metadata
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import layout
from .auth import sha256_hex
from .errors import IntegrityError, RuntimeBuildError, StorageError, StorageKeyError
from .storage import Storage

logger = logging.getLogger(__name__)

#: The file in an environment's root that says which runtime it holds.
ENVIRONMENT_FILE = "wrencore-runtime.json"


def canonical_name(name: str) -> str:
    """PEP 503 normalization: ``PyYAML`` and ``pyyaml``, ``a_b`` and ``a-b`` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# -- the check ----------------------------------------------------------------------------
def installed_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment_mismatch(runtime: Dict[str, Any]) -> Optional[str]:
    """Say which of the runtime's distributions this process would import at another
    version (or not at all); None when it runs the runtime."""
    differences = []
    for name, wanted in sorted((runtime.get("distributions") or {}).items()):
        have = installed_version(name)
        if have != wanted:
            differences.append(f"{name}=={wanted} in the job's runtime but "
                               f"{'not installed' if have is None else have} on the worker")
    if not differences:
        return None
    return (f"this worker does not run the job's runtime {str(runtime.get('hash'))[:16]}: "
            + "; ".join(differences))


# -- wheels -------------------------------------------------------------------------------
def wheel_unpacked_size(data: bytes) -> int:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(info.file_size for info in archive.infolist())


def install_wheel(wheel: "str | bytes", site_dir: str) -> None:
    """Unpack a wheel into ``site_dir`` as an installer would (purelib and platlib only)."""
    source = io.BytesIO(wheel) if isinstance(wheel, bytes) else wheel
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            top, _, rest = name.partition("/")
            if top.endswith(".data"):
                kind, _, rest = rest.partition("/")
                if kind not in ("purelib", "platlib"):
                    continue  # scripts, headers and data files: workers need none
                name = rest
            target = os.path.join(site_dir, *name.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111:
                os.chmod(target, mode)


# -- environments -------------------------------------------------------------------------
def site_packages(env_dir: str) -> str:
    return os.path.join(env_dir, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                        "site-packages")


def env_python(env_dir: str) -> str:
    return os.path.join(env_dir, "bin", "python")


def base_python() -> str:
    """The interpreter a new environment is made from (never a virtualenv's own)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def load_manifest(storage: Storage, runtime_hash: str) -> Dict[str, Any]:
    return json.loads(storage.get(layout.runtime_manifest_key(runtime_hash)))


def runtime_identity_hash(manifest: Dict[str, Any]) -> str:
    """The runtime hash a manifest's identity gives (as ``wrencore.environment.Runtime``)."""
    identity = {"python": manifest.get("python"), "platform": manifest.get("platform"),
                "distributions": dict(sorted((manifest.get("distributions") or {}).items())),
                "digests": dict(sorted((manifest.get("digests") or {}).items()))}
    return sha256_hex(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode())


def _tampered(storage: Storage, key: str, runtime_hash: str, problem: str) -> IntegrityError:
    return IntegrityError(
        f"{storage.location(key)} {problem}: it was changed after the client stored it, so "
        f"nothing of runtime {runtime_hash[:16]} was installed. Check who can write to the "
        f"storage, delete the stored runtime (`wrencore runtime delete {runtime_hash[:16]}`) "
        f"and submit the job again from a new Python process, which stores it afresh")


def checked_manifest(storage: Storage, runtime_hash: str,
                     manifest_sha256: Optional[str] = None) -> Dict[str, Any]:
    """The runtime's manifest, checked against the digest the signed job carries (if any)
    and against the runtime hash; :class:`IntegrityError` if it does not match."""
    key = layout.runtime_manifest_key(runtime_hash)
    data = storage.get(key)
    if manifest_sha256 and sha256_hex(data) != manifest_sha256:
        raise _tampered(storage, key, runtime_hash, f"does not have the SHA-256 the signed "
                        f"job carries ({manifest_sha256[:16]}…, it has {sha256_hex(data)[:16]}…)")
    try:
        manifest = json.loads(data)
        named = runtime_identity_hash(manifest)
    except (ValueError, AttributeError, TypeError) as exc:
        raise _tampered(storage, key, runtime_hash, f"is not a runtime manifest ({exc})") \
            from None
    if named != runtime_hash:
        raise _tampered(storage, key, runtime_hash,
                        f"describes runtime {named[:16]}, not the job's {runtime_hash[:16]}")
    return manifest


def checked_wheel(storage: Storage, runtime_hash: str, entry: Dict[str, Any]) -> bytes:
    """A stored wheel of the runtime, checked against the SHA-256 its manifest records."""
    key = layout.runtime_wheel_key(runtime_hash, entry["file"])
    data = storage.get(key)
    expected = str(entry.get("sha256") or "")
    if sha256_hex(data) != expected:
        raise _tampered(storage, key, runtime_hash,
                        f"does not have the SHA-256 its runtime's manifest records "
                        f"({expected[:16] or 'none'}…, it has {sha256_hex(data)[:16]}…)")
    return data


def _locked(root: str):
    import fcntl  # POSIX only; workers build environments on Linux

    os.makedirs(root, exist_ok=True)
    lock = open(os.path.join(root, ".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def build_environment(storage: Storage, runtime_hash: str, root: str, *,
                      python: Optional[str] = None, layout_kind: str = "venv",
                      manifest_sha256: Optional[str] = None) -> str:
    """The directory of the runtime's environment under ``root``, built if missing.

    ``layout_kind`` ``"venv"`` makes a virtualenv without pip from ``python`` and unpacks
    the wheels into its site-packages; ``"layer"`` unpacks them into ``python/`` (a Lambda
    layer's layout). Concurrent builders on one machine wait for each other. The manifest
    and every wheel are checked (:func:`checked_manifest`, :func:`checked_wheel`) before
    anything is installed: a mismatch raises :class:`IntegrityError` and leaves nothing
    under ``root``.
    """
    env_dir = os.path.join(root, runtime_hash)
    marker = os.path.join(env_dir, ENVIRONMENT_FILE)
    if os.path.exists(marker):
        _touch(env_dir)
        return env_dir
    with _locked(root):
        if os.path.exists(marker):
            return env_dir
        start = time.time()
        manifest = checked_manifest(storage, runtime_hash, manifest_sha256)
        staging = tempfile.mkdtemp(dir=root, prefix=".build-")
        try:
            wheels = os.path.join(staging, ".wheels")  # all checked before any is installed
            os.makedirs(wheels)
            for index, wheel in enumerate(manifest["wheels"]):
                with open(os.path.join(wheels, str(index)), "wb") as f:
                    f.write(checked_wheel(storage, runtime_hash, wheel))
            if layout_kind == "venv":
                subprocess.run([python or base_python(), "-m", "venv", "--without-pip", staging],
                               check=True, stdout=subprocess.DEVNULL)
                site_dir = site_packages(staging)
            else:
                site_dir = os.path.join(staging, "python")
            os.makedirs(site_dir, exist_ok=True)
            for index in range(len(manifest["wheels"])):
                install_wheel(os.path.join(wheels, str(index)), site_dir)
            shutil.rmtree(wheels)
            with open(os.path.join(staging, ENVIRONMENT_FILE), "w") as f:
                json.dump(manifest, f, indent=1, sort_keys=True)
            if layout_kind == "venv":
                # A virtualenv's scripts name its directory: build in place, not in staging.
                shutil.rmtree(env_dir, ignore_errors=True)
                subprocess.run([python or base_python(), "-m", "venv", "--without-pip",
                                env_dir], check=True, stdout=subprocess.DEVNULL)
                shutil.rmtree(site_packages(env_dir))
                os.rename(site_packages(staging), site_packages(env_dir))
                os.rename(os.path.join(staging, ENVIRONMENT_FILE), marker)
                shutil.rmtree(staging, ignore_errors=True)
            else:
                os.rename(staging, env_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("built environment of runtime %s in %.1f s", runtime_hash[:16],
                    time.time() - start)
        return env_dir


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _tree_size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def evict_environments(root: str, *, max_age: float, max_bytes: int,
                       keep: Iterable[str] = ()) -> List[str]:
    """Delete environments unused for ``max_age`` seconds, then the least recently used
    until the rest fit in ``max_bytes``; never those in ``keep``. Returns the deleted hashes."""
    if not os.path.isdir(root):
        return []
    keep = set(keep)
    entries = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(path):
            continue
        entries.append((os.stat(path).st_mtime, name, path, _tree_size(path)))
    entries.sort()
    deleted = []
    now = time.time()
    total = sum(e[3] for e in entries)
    with _locked(root):
        for mtime, name, path, size in entries:
            if name in keep:
                continue
            if now - mtime > max_age or total > max_bytes:
                shutil.rmtree(path, ignore_errors=True)
                total -= size
                deleted.append(name)
    if deleted:
        logger.info("evicted environments %s", ", ".join(d[:16] for d in deleted))
    return deleted


# -- running a job in another environment -------------------------------------------------
def _write_frame(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("!Q", len(data)) + data)
    stream.flush()


def _read_frame(stream) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the other side closed the pipe")
    (size,) = struct.unpack("!Q", header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the pipe")
    return pickle.loads(data)


class EnvironmentProcessDied(RuntimeError):
    """The child process running a call in a runtime's environment exited mid-call."""


class EnvironmentProcess:
    """A long-lived child process that runs calls with an environment's own interpreter
    and its own (the client's version of) ``wrencore_runtime``; ``run`` mirrors
    :meth:`JobRunner.run` with ``store=False``."""

    def __init__(self, env_dir: str, worker_id: str = "") -> None:
        self.env_dir = env_dir
        env = dict(os.environ, WRENCORE_WORKER_ID=worker_id)
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [env_python(env_dir), "-m", "wrencore_runtime.environment", "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        threading.Thread(target=_relay, args=(self.proc.stderr,), daemon=True,
                         name="wrencore-environment-output").start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job: Dict[str, Any], call: Dict[str, Any]):
        from .runner import CallOutcome

        try:
            _write_frame(self.proc.stdin, (job, call))
            status, result = _read_frame(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError) as exc:
            self.proc.wait()
            raise EnvironmentProcessDied(
                f"the process running call {call.get('call_id')} in the environment of runtime "
                f"{os.path.basename(self.env_dir)[:16]} exited ({self.proc.returncode})") from exc
        return CallOutcome(status=status, result=result)

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except Exception:
            self.proc.kill()


#: Where the output of environment processes goes: the worker's own log handlers (the
#: daemon's stderr and, on a fleet, CloudWatch), so what a call logged before its process
#: died is kept.
output_logger = logging.getLogger("wrencore_runtime.environment.output")


def _relay(pipe: Any) -> None:
    for line in iter(pipe.readline, b""):
        output_logger.info("%s", line.decode("utf-8", "replace").rstrip("\n"))


def serve() -> int:
    """The child side of :class:`EnvironmentProcess`: frames in, outcomes out."""
    from .runner import JobRunner

    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a call's prints must not corrupt the protocol
    runner = JobRunner(worker_id=os.environ.get("WRENCORE_WORKER_ID", ""))
    # A call's log records also go, as they happen, to stderr, which the worker relays to
    # its log (a call's own stderr is captured for its status, not written here).
    echo = logging.StreamHandler(sys.stderr)
    echo.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(echo)
    while True:
        try:
            job, call = _read_frame(proto_in)
        except EOFError:
            return 0
        outcome = runner.run(job, call, store=False)
        _write_frame(proto_out, (outcome.status, outcome.result))


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        sys.exit(serve())
    print("usage: python -m wrencore_runtime.environment serve", file=sys.stderr)
    sys.exit(2)


def unbuildable(runtime_hash: str, storage: Storage, exc: BaseException,
                worker_id: str = "") -> RuntimeBuildError:
    """The error that fails the calls of a job whose runtime's environment cannot be built
    from ``storage``: it names the runtime, what went wrong and what to do."""
    where = f"worker {worker_id}" if worker_id else "the worker"
    stored = storage.location(layout.runtime_prefix(runtime_hash))
    if isinstance(exc, StorageKeyError):
        return RuntimeBuildError(
            f"{where} could not build the environment of the job's runtime "
            f"{runtime_hash[:16]}: {storage.location(str(exc.args[0]) if exc.args else '')} "
            f"is missing from storage (the runtime {stored} was deleted after the job was "
            f"submitted, e.g. by `wrencore runtime delete`). Submit the job again from a new "
            f"Python process, which stores the runtime again, or store it with "
            f"`wrencore runtime build`; the job's calls were not run")
    return RuntimeBuildError(
        f"{where} could not build the environment of the job's runtime {runtime_hash[:16]} "
        f"from {stored}: {type(exc).__name__}: {exc}. Delete the stored runtime "
        f"(`wrencore runtime delete {runtime_hash[:16]}`) and submit the job again from a new "
        f"Python process, which stores it afresh; the job's calls were not run")


class JobEnvironments:
    """A worker's environments for jobs whose runtime is not its own: built on first use
    from storage under ``root``, each served by one :class:`EnvironmentProcess` (at most
    ``max_processes`` alive), evicted from disk by age and total size."""

    #: Seconds a runtime whose environment could not be built fails its calls at once,
    #: without trying again (a message's calls, a job's next messages).
    FAILURE_MEMORY = 10.0

    def __init__(self, root: str, *, max_age: float = 7 * 24 * 3600.0,
                 max_bytes: int = 20 * 1024 ** 3, max_processes: int = 2,
                 worker_id: str = "") -> None:
        self.root, self.max_age, self.max_bytes = root, max_age, max_bytes
        self.max_processes, self.worker_id = max_processes, worker_id
        self.processes: "Dict[str, EnvironmentProcess]" = {}
        self._failures: "Dict[str, Tuple[float, RuntimeBuildError]]" = {}

    def runner_for(self, job: Dict[str, Any]) -> EnvironmentProcess:
        """The process running ``job``'s runtime. Raises :class:`RuntimeBuildError` when its
        environment cannot be built (the runtime is missing from storage or broken) — the
        job's calls cannot run here, and repeating will not help; a transient storage error
        propagates as it is."""
        from .storage import storage_from_spec

        runtime_hash = job["runtime"]["hash"]
        failed = self._failures.get(runtime_hash)
        if failed is not None and time.monotonic() - failed[0] < self.FAILURE_MEMORY:
            raise failed[1]
        process = self.processes.pop(runtime_hash, None)
        if process is None or not process.alive:
            storage = storage_from_spec(job["storage"])
            try:
                env_dir = build_environment(
                    storage, runtime_hash, self.root,
                    manifest_sha256=job["runtime"].get("manifest_sha256"))
                evict_environments(self.root, max_age=self.max_age, max_bytes=self.max_bytes,
                                   keep={runtime_hash, *self.processes})
                process = EnvironmentProcess(env_dir, self.worker_id)
            except Exception as exc:
                if isinstance(exc, StorageError) and exc.transient:
                    raise
                error = unbuildable(runtime_hash, storage, exc, self.worker_id)
                self._failures[runtime_hash] = (time.monotonic(), error)
                logger.error("%s", error)
                raise error from exc
            self._failures.pop(runtime_hash, None)
        self.processes[runtime_hash] = process  # most recently used last
        while len(self.processes) > self.max_processes:
            oldest = next(iter(self.processes))
            self.processes.pop(oldest).stop()
        return process

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.processes.clear()
