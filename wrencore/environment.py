"""Runtimes: the user's environment, detected, locked, built into wheels and stored once.

A :class:`Runtime` is a content-addressed description of a worker environment: Python
major.minor, target platform and a locked set of distributions (``name==version``),
including wrencore itself at this client's exact code. Its hash names it everywhere.

What goes in, in three forms (see :func:`resolve`):

* **automatic** — the distributions the job's code imports: the function's own imports
  (``IMPORT_NAME`` in every nested code object, so imports inside function bodies count),
  the modules of the globals it references, and the imports of the user's local modules
  that travel with the job; then their dependency closure at the installed versions;
* **explicit** — ``requirements=[...]`` or a requirements/pyproject file, added to the
  automatic set (``runtime="auto"``) or alone (``runtime="explicit"``);
* **named** — ``runtime="sha256:…"``, a runtime stored earlier.

Nothing is compiled here. A distribution installed on this computer becomes a wheel of its
installed files when its wheel tags fit the target (pure Python anywhere; compiled code only
when the target is this platform and Python); editable installs are packed from their
source tree. Everything else is downloaded as a binary wheel for the target
(``pip download --only-binary=:all: --platform … --python-version …``); a distribution
without one is a :class:`RuntimeBuildError` that names it.

Wheels are cached under ``$WRENCORE_CACHE`` (default ``~/.cache/wrencore``); a runtime is
uploaded to a storage once (``runtimes/{hash}/…``, see ``wrencore_runtime.layout``) and a
process remembers what it stored, so an unchanged job costs no storage request.
"""

from __future__ import annotations

import base64
import dataclasses
import dis
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
import types
import zipfile
from importlib import metadata
from importlib.util import find_spec
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from wrencore_runtime import layout
from wrencore_runtime.environment import canonical_name, wheel_unpacked_size
from wrencore_runtime.errors import StorageKeyError
from wrencore_runtime.protocol import PYTHON
from wrencore_runtime.storage import Storage

from .errors import ConfigError, RuntimeBuildError

logger = logging.getLogger(__name__)

#: This computer's platform, in ``sysconfig.get_platform()`` form (``linux-x86_64``).
PLATFORM = sysconfig.get_platform()
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", ".pytest_cache",
              ".mypy_cache", "node_modules"}
_DIST_INFO_SKIP = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
_STDLIB = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)


#: wrencore's dependencies that only the user's computer needs (the command line, checking
#: the configuration, progress bars, parsing requirements to build runtimes): a worker never
#: imports them, so runtimes leave them out.
CLIENT_ONLY = frozenset({"click", "msgspec", "packaging", "tqdm"})


def cache_dir(*parts: str) -> str:
    from .entrypoints import cache_root

    path = os.path.join(cache_root(), *parts)
    os.makedirs(path, exist_ok=True)
    return path


# -- the runtime --------------------------------------------------------------------------
@dataclasses.dataclass
class Wheel:
    name: str
    version: str
    path: str
    #: "installed", "source" (editable or unpackaged) or "downloaded"
    origin: str

    @property
    def file(self) -> str:
        return os.path.basename(self.path)


@dataclasses.dataclass
class Runtime:
    python: str
    platform: str
    #: canonical name -> version
    distributions: Dict[str, str]
    #: canonical name -> content digest, for distributions packed from source (editable)
    digests: Dict[str, str] = dataclasses.field(default_factory=dict)
    #: canonical name -> why it is in the runtime (not part of the identity)
    reasons: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    #: canonical name -> its wheel on this computer (None for a named runtime)
    wheels: Optional[Dict[str, Wheel]] = None
    #: SHA-256 of its manifest as stored (set once stored or read; not part of the identity):
    #: the signed job carries it, so workers check the manifest, which has each wheel's.
    manifest_sha256: Optional[str] = None

    def identity(self) -> Dict[str, Any]:
        return {"python": self.python, "platform": self.platform,
                "distributions": dict(sorted(self.distributions.items())),
                "digests": dict(sorted(self.digests.items()))}

    @property
    def hash(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def job_entry(self) -> Dict[str, Any]:
        """What a job header carries: enough for a worker to find and check its runtime."""
        entry = {"hash": self.hash, "python": self.python, "platform": self.platform,
                 "distributions": dict(sorted(self.distributions.items()))}
        if self.manifest_sha256:
            entry["manifest_sha256"] = self.manifest_sha256
        return entry

    def describe(self) -> str:
        lines = [f"runtime sha256:{self.hash}", f"  python {self.python} on {self.platform}"]
        for name in sorted(self.distributions):
            wheel = (self.wheels or {}).get(name)
            size = f"{os.path.getsize(wheel.path) / 1e6:8.2f} MB" if wheel else " " * 11
            why = "; ".join(self.reasons.get(name, []))
            lines.append(f"  {name}=={self.distributions[name]:<14} {size}  {why}")
        return "\n".join(lines)

    @classmethod
    def from_manifest(cls, manifest: Dict[str, Any]) -> "Runtime":
        return cls(python=manifest["python"], platform=manifest["platform"],
                   distributions=dict(manifest["distributions"]),
                   digests=dict(manifest.get("digests") or {}),
                   reasons={k: list(v) for k, v in (manifest.get("reasons") or {}).items()})


# -- detection ----------------------------------------------------------------------------
def _code_objects(code: types.CodeType) -> Iterable[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


_code_imports_cache: Dict[types.CodeType, Tuple[Set[Tuple[str, int, Tuple[str, ...]]], Set[str]]] = {}


def code_imports(code: types.CodeType, nested: bool = True):
    """(imports ``(module, level, fromlist)`` in ``code`` — and, with ``nested``, in every
    function and class body inside it —, global names it uses)."""
    cached = _code_imports_cache.get(code) if nested else None
    if cached is not None:
        return cached
    imports: Set[Tuple[str, int, Tuple[str, ...]]] = set()
    names: Set[str] = set()
    for obj in (_code_objects(code) if nested else [code]):
        names.update(obj.co_names)
        instructions = list(dis.get_instructions(obj))
        for index, instruction in enumerate(instructions):
            if instruction.opname != "IMPORT_NAME":
                continue
            level, fromlist = 0, ()
            if index >= 2 and instructions[index - 2].opname == "LOAD_CONST":
                level = instructions[index - 2].argval or 0
            if index >= 1 and instructions[index - 1].opname == "LOAD_CONST":
                fromlist = tuple(instructions[index - 1].argval or ())
            imports.add((instruction.argval or "", int(level), fromlist))
    if len(_code_imports_cache) > 4096:
        _code_imports_cache.clear()
    if nested:
        _code_imports_cache[code] = (imports, names)
    return imports, names


def _absolute(module: str, level: int, package: str) -> str:
    if level == 0:
        return module
    parts = package.split(".") if package else []
    base = ".".join(parts[:len(parts) - (level - 1)]) if level - 1 <= len(parts) else ""
    return f"{base}.{module}".strip(".") if module else base


def _module_of(value: Any) -> Optional[str]:
    if isinstance(value, types.ModuleType):
        return value.__name__
    module = getattr(value, "__module__", None)
    if isinstance(module, str):
        return module
    module = getattr(type(value), "__module__", None)
    return module if isinstance(module, str) and module != "builtins" else None


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _local_roots() -> Dict[str, str]:
    from .serialize import _cached_local_module_roots

    return _cached_local_module_roots()


def function_imports(fn: Callable) -> Tuple[Dict[str, str], Set[str]]:
    """What the function needs: ``({top-level module: reason}, {local module names})``.

    Its imports (in its body and nested functions) and the modules of the globals,
    closures and defaults it references; functions of the user's own code it references
    are followed, and local modules it reaches are returned for scanning."""
    local = _local_roots()
    found: Dict[str, str] = {}
    local_modules: Set[str] = set()
    seen: Set[int] = set()
    pending: List[Any] = [fn]

    def note(module: str, reason: str) -> None:
        top = module.partition(".")[0]
        if top in local:
            local_modules.add(module)
        elif top not in ("__main__", "__mp_main__"):
            found.setdefault(top, reason)

    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        obj = getattr(obj, "__func__", obj)
        code = getattr(obj, "__code__", None)
        label = getattr(obj, "__qualname__", repr(obj))
        if code is None:
            if isinstance(obj, type):  # a class: its methods
                pending.extend(v for v in vars(obj).values() if callable(v))
            elif callable(obj) and hasattr(type(obj), "__call__"):
                pending.append(type(obj))
            continue
        home = getattr(obj, "__module__", None) or ""
        if home.partition(".")[0] in local:
            local_modules.add(home)
        package = home if getattr(sys.modules.get(home), "__path__", None) else home.rpartition(".")[0]
        imports, names = code_imports(code)
        for module, level, fromlist in imports:
            name = _absolute(module, level, package)
            if name:
                note(name, f"imported in {label}")
                for item in fromlist:
                    if f"{name}.{item}" in sys.modules:
                        note(f"{name}.{item}", f"imported in {label}")
        referenced: List[Any] = []
        globals_ = getattr(obj, "__globals__", {}) or {}
        referenced += [globals_[n] for n in names if n in globals_]
        referenced += [c.cell_contents for c in (getattr(obj, "__closure__", None) or ())
                       if _cell_filled(c)]
        referenced += list(getattr(obj, "__defaults__", None) or ())
        referenced += list((getattr(obj, "__kwdefaults__", None) or {}).values())
        for value in referenced:
            module = _module_of(value)
            if not module:
                continue
            top = module.partition(".")[0]
            if top in ("__main__", "__mp_main__") or top in local:
                if top in local:
                    local_modules.add(module)
                if isinstance(value, types.ModuleType):  # helper.fn(): follow helper.fn
                    pending.extend(getattr(value, n) for n in names
                                   if callable(getattr(value, n, None)))
                elif callable(value):
                    pending.append(value)
                continue
            found.setdefault(top, f"referenced by {label}")
    return found, local_modules


class _LocalModuleImports:
    """Imports made by the user's local modules that a function reaches (following their
    own local imports), each file rescanned only when it changes."""

    def __init__(self) -> None:
        self._per_file: Dict[Tuple[str, int, int], Set[Tuple[str, int, Tuple[str, ...]]]] = {}

    def _file_imports(self, path: str):
        try:
            st = os.stat(path)
        except OSError:
            return set()
        key = (path, st.st_mtime_ns, st.st_size)
        imports = self._per_file.get(key)
        if imports is None:
            try:
                with open(path, "rb") as f:
                    code = compile(f.read(), path, "exec", dont_inherit=True)
                # Module level only: its functions count when the job's function uses them.
                imports = code_imports(code, nested=False)[0]
            except (SyntaxError, ValueError, OSError):
                imports = set()
            self._per_file[key] = imports
        return imports

    def get(self, start: Iterable[str]) -> Dict[str, str]:
        local = _local_roots()
        found: Dict[str, str] = {}
        pending = list(start)
        seen: Set[str] = set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            parent = name.rpartition(".")[0]
            if parent:
                pending.append(parent)  # importing a submodule runs its packages' __init__
            module = sys.modules.get(name)
            path = getattr(module, "__file__", None)
            if not path or not path.endswith(".py"):
                continue
            is_package = os.path.basename(path) == "__init__.py"
            package = name if is_package else parent
            for imported, level, fromlist in self._file_imports(path):
                target = _absolute(imported, level, package)
                if not target:
                    continue
                candidates = [target] + [f"{target}.{item}" for item in fromlist
                                         if f"{target}.{item}" in sys.modules]
                for candidate in candidates:
                    top = candidate.partition(".")[0]
                    if top in local:
                        pending.append(candidate)
                    else:
                        found.setdefault(top, f"imported by local module {name}")
        return found


# -- installed distributions ------------------------------------------------------------------
def _requirement(text: str):
    from packaging.requirements import Requirement

    return Requirement(text)


class _Installed:
    """This interpreter's installed distributions, re-read when ``sys.path`` changes."""

    def __init__(self) -> None:
        self._key: Any = None
        self.by_module: Dict[str, List[str]] = {}
        self.dists: Dict[str, Any] = {}
        self.closures: Dict[Any, Dict[str, List[str]]] = {}

    def refresh(self) -> None:
        key = []
        for entry in sys.path:
            try:
                key.append((entry, os.stat(entry or ".").st_mtime_ns))
            except OSError:
                key.append((entry, 0))
        key_t = tuple(key)
        if key_t == self._key:
            return
        self._key = key_t
        self.by_module = {k: [canonical_name(d) for d in v]
                          for k, v in metadata.packages_distributions().items()}
        self.dists = {}
        for dist in metadata.distributions():
            name = canonical_name(dist.metadata["Name"] or "")
            if name and name not in self.dists:  # the first on sys.path wins, as for imports
                self.dists[name] = dist
        self.closures = {}
        self.versions: Dict[str, Optional[str]] = {}
        self.from_source: Dict[str, bool] = {}

    def version(self, name: str) -> Optional[str]:
        name = canonical_name(name)
        if name not in self.versions:
            dist = self.dists.get(name)
            self.versions[name] = dist.version if dist is not None else None
        return self.versions[name]

    def packed_from_source(self, name: str) -> bool:
        """True for a distribution whose installed files do not hold its code (editable)."""
        if name not in self.from_source:
            dist = self.dists[name]
            self.from_source[name] = not _record_has_code(dist, _top_levels(dist, self.by_module))
        return self.from_source[name]

    def closure(self, roots: Dict[str, Tuple[Tuple[str, ...], str]]) -> Dict[str, List[str]]:
        """``{name: reasons}`` for the installed roots (name -> (extras, reason)) and every
        installed distribution they require, transitively; wrencore's client-only
        dependencies (:data:`CLIENT_ONLY`) are left out unless something else needs them."""
        key = tuple(sorted((k, v[0], v[1]) for k, v in roots.items()))
        cached = self.closures.get(key)
        if cached is not None:
            return cached
        result: Dict[str, List[str]] = {}
        pending = [(name, extras, reason) for name, (extras, reason) in roots.items()]
        expanded: Set[Tuple[str, Tuple[str, ...]]] = set()
        while pending:
            name, extras, reason = pending.pop()
            name = canonical_name(name)
            dist = self.dists.get(name)
            if dist is None:
                continue
            reasons = result.setdefault(name, [])
            if reason not in reasons:
                reasons.append(reason)
            if (name, extras) in expanded:
                continue
            expanded.add((name, extras))
            for text in dist.requires or ():
                requirement = _requirement(text)
                if name == "wrencore" and canonical_name(requirement.name) in CLIENT_ONLY:
                    continue
                marker = requirement.marker
                if marker is not None and not any(
                        marker.evaluate({"extra": extra}) for extra in (extras or ("",))):
                    continue
                pending.append((requirement.name, tuple(sorted(requirement.extras)),
                                f"required by {name}"))
        self.closures[key] = result
        return result


# -- wheels from installed files --------------------------------------------------------------
def _zip_deterministic(entries: Dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if arcname.endswith(".so") else 0o644) << 16
            archive.writestr(info, entries[arcname])
    return buffer.getvalue()


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _wheel_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name)


def _top_levels(dist: Any, by_module: Dict[str, List[str]]) -> List[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return sorted({line.strip() for line in text.splitlines() if line.strip()})
    name = canonical_name(dist.metadata["Name"])
    return sorted(top for top, dists in by_module.items() if name in dists)


def _record_has_code(dist: Any, tops: Sequence[str]) -> bool:
    if not dist.read_text("RECORD") or not dist.files:
        return False
    paths = {str(p).replace("\\", "/") for p in dist.files}
    return all(f"{top}/__init__.py" in paths or f"{top}.py" in paths
               or any(p.startswith(f"{top}/") or p.startswith(f"{top}.") for p in paths)
               for top in tops)


def _source_files(tops: Sequence[str]) -> Dict[str, str]:
    """``{arcname: file}`` of importable top-level modules (an editable install's source)."""
    files: Dict[str, str] = {}
    for top in tops:
        spec = find_spec(top)
        if spec is None:
            continue
        locations = list(spec.submodule_search_locations or [])
        if not locations:
            if spec.origin and os.path.isfile(spec.origin):
                files[os.path.basename(spec.origin)] = spec.origin
            continue
        root = locations[0]
        for dirpath, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            for fname in sorted(names):
                if fname.endswith((".pyc", ".pyo")) or fname.startswith("."):
                    continue
                full = os.path.join(dirpath, fname)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                files[f"{top}/{rel}"] = full
    return files


def _stat_key(files: Dict[str, str]) -> Tuple:
    key = []
    for arcname, full in sorted(files.items()):
        st = os.stat(full)
        key.append((arcname, st.st_mtime_ns, st.st_size))
    return tuple(key)


class _WheelMaker:
    """Builds (once, cached on disk) a wheel of an installed distribution's files."""

    def __init__(self) -> None:
        self._digests: Dict[str, Tuple[Any, str]] = {}

    def source_digest(self, dist: Any, by_module: Dict[str, List[str]]) -> Optional[str]:
        """For a distribution packed from source, a digest of its code; None otherwise."""
        tops = _top_levels(dist, by_module)
        if _record_has_code(dist, tops):
            return None
        files = _source_files(tops)
        key = _stat_key(files)
        name = canonical_name(dist.metadata["Name"])
        cached = self._digests.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256()
        for arcname, full in sorted(files.items()):
            with open(full, "rb") as f:
                digest.update(arcname.encode() + b"\0" + hashlib.sha256(f.read()).digest())
        for meta in ("METADATA", "PKG-INFO", "entry_points.txt"):
            digest.update((dist.read_text(meta) or "").encode())
        value = digest.hexdigest()[:32]
        self._digests[name] = (key, value)
        return value

    def wheel(self, dist: Any, by_module: Dict[str, List[str]], target: "Target") -> Wheel:
        name = canonical_name(dist.metadata["Name"])
        version = dist.version
        digest = self.source_digest(dist, by_module)
        tops = _top_levels(dist, by_module)
        location = str(dist.locate_file(""))
        key = hashlib.sha256(f"{name}|{version}|{digest}|{location}".encode()).hexdigest()[:24]
        directory = cache_dir("wheels", key)
        for existing in os.listdir(directory):
            if existing.endswith(".whl"):
                return Wheel(name, version, os.path.join(directory, existing),
                             "source" if digest else "installed")
        entries: Dict[str, bytes] = {}
        dist_info = f"{_wheel_name(name)}-{version}.dist-info"
        tag = None
        if digest is None:
            for path in dist.files:
                parts = path.parts
                if ".." in parts or "__pycache__" in parts or str(path).endswith((".pyc", ".pyo")):
                    continue
                if parts[0].endswith(".dist-info"):
                    if parts[-1] in _DIST_INFO_SKIP or len(parts) < 2:
                        continue
                    arcname = "/".join((dist_info,) + tuple(parts[1:]))
                else:
                    arcname = "/".join(parts)
                full = dist.locate_file(path)
                if os.path.isfile(full):
                    with open(full, "rb") as f:
                        entries[arcname] = f.read()
            wheel_text = dist.read_text("WHEEL") or ""
            tags = re.findall(r"^Tag:\s*(\S+)", wheel_text, re.M)
            tag = tags[0] if tags else None
        else:
            for arcname, full in _source_files(tops).items():
                with open(full, "rb") as f:
                    entries[arcname] = f.read()
            for meta, target_name in (("METADATA", "METADATA"), ("PKG-INFO", "METADATA"),
                                      ("entry_points.txt", "entry_points.txt"),
                                      ("top_level.txt", "top_level.txt")):
                text = dist.read_text(meta)
                if text and f"{dist_info}/{target_name}" not in entries:
                    entries[f"{dist_info}/{target_name}"] = text.encode()
        if tag is None:
            compiled = any(a.endswith((".so", ".pyd")) for a in entries)
            tag = (f"cp{PYTHON.replace('.', '')}-cp{PYTHON.replace('.', '')}-"
                   f"{PLATFORM.replace('-', '_').replace('.', '_')}") if compiled else "py3-none-any"
        if not _tag_fits(tag, target):
            raise _NeedsDownload(name, version)
        entries[f"{dist_info}/WHEEL"] = (
            f"Wheel-Version: 1.0\nGenerator: wrencore\nRoot-Is-Purelib: "
            f"{'true' if tag.endswith('none-any') else 'false'}\nTag: {tag}\n").encode()
        record = [_record_line(a, d) for a, d in sorted(entries.items())]
        record.append(f"{dist_info}/RECORD,,")
        entries[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
        data = _zip_deterministic(entries)
        path = os.path.join(directory, f"{_wheel_name(name)}-{version}-{tag}.whl")
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        return Wheel(name, version, path, "source" if digest else "installed")


class _NeedsDownload(Exception):
    def __init__(self, name: str, version: str) -> None:
        super().__init__(name)
        self.name, self.version = name, version


def _tag_fits(tag: str, target: "Target") -> bool:
    python_tag, abi, platform = tag.split("-", 2) if tag.count("-") >= 2 else (tag, "", "")
    if platform == "any":
        return python_tag.startswith("py3") or python_tag == f"cp{target.python.replace('.', '')}"
    return target.native and python_tag.startswith(f"cp{target.python.replace('.', '')}")


# -- targets and downloads ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Target:
    python: str = PYTHON
    platform: str = PLATFORM

    @property
    def native(self) -> bool:
        """Installed compiled files of this computer fit the target."""
        return self.python == PYTHON and self.platform == PLATFORM

    def pip_platforms(self) -> List[str]:
        os_name, _, arch = self.platform.partition("-")
        if os_name == "linux":
            return [f"manylinux2014_{arch}", f"manylinux_2_17_{arch}", f"linux_{arch}"]
        return [self.platform.replace("-", "_").replace(".", "_")]


def download_wheels(requirements: Sequence[str], target: Target, *,
                    constraints: Sequence[str] = (), no_deps: bool = False) -> List[Wheel]:
    """Binary wheels for ``target`` from the package index (never an sdist), cached."""
    key_text = json.dumps([sorted(requirements), target.python, target.platform,
                           sorted(constraints), no_deps])
    directory = cache_dir("downloads", hashlib.sha256(key_text.encode()).hexdigest()[:24])
    marker = os.path.join(directory, ".complete")
    if not os.path.exists(marker):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as cfile:
            cfile.write("\n".join(constraints) + "\n")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary=:all:", "--python-version", target.python,
                   "--implementation", "cp", "-d", directory, "-c", cfile.name]
        for platform in target.pip_platforms():
            command += ["--platform", platform]
        if no_deps:
            command.append("--no-deps")
        start = time.time()
        done = subprocess.run(command + list(requirements), capture_output=True, text=True)
        os.unlink(cfile.name)
        if done.returncode != 0:
            raise _download_error(done.stderr, requirements, target)
        open(marker, "w").close()
        logger.info("downloaded wheels for %s in %.1f s", ", ".join(requirements),
                    time.time() - start)
    wheels = []
    for fname in sorted(os.listdir(directory)):
        if fname.endswith(".whl"):
            name, version = fname.split("-")[:2]
            wheels.append(Wheel(canonical_name(name), version, os.path.join(directory, fname),
                                "downloaded"))
    return wheels


def _download_error(stderr: str, requirements: Sequence[str], target: Target) -> RuntimeBuildError:
    match = re.search(r"No matching distribution found for (\S+)", stderr)
    culprit = match.group(1) if match else ", ".join(requirements)
    lines = [line for line in stderr.splitlines() if "is ignored" not in line]
    return RuntimeBuildError(
        f"no wheel of {culprit} for Python {target.python} on {target.platform}: wrencore "
        f"never compiles on your computer, so every distribution of a runtime for another "
        f"platform, or not installed here, must come as a binary wheel. Pick a version of "
        f"{culprit} that publishes wheels for {target.platform}, put a wheel of it in a "
        f"local index, or remove it. pip said: {' '.join(lines[-3:])}")


# -- requirements -----------------------------------------------------------------------------
def read_requirements(source: "str | Sequence[str] | None") -> List[str]:
    """``requirements=`` as given: a list of requirement strings, or the path of a
    requirements file or a pyproject.toml (its ``[project] dependencies``)."""
    if source is None:
        return []
    if isinstance(source, (list, tuple)):
        return [str(r).strip() for r in source if str(r).strip()]
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ConfigError(f"requirements file {path!r} does not exist (pass a list of "
                          f"requirement strings, a requirements file or a pyproject.toml)")
    if path.endswith(".toml"):
        from .config import tomllib  # type: ignore[attr-defined]

        with open(path, "rb") as f:
            document = tomllib.load(f)
        return list(document.get("project", {}).get("dependencies", []))
    found = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                found.append(line)
    return found


# -- resolving ----------------------------------------------------------------------------------
class Resolver:
    """Turns a function and the user's options into a :class:`Runtime` (fast when warm)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.installed = _Installed()
        self.local_imports = _LocalModuleImports()
        self.wheels = _WheelMaker()
        self._explicit: Dict[Any, Tuple[Dict[str, List[str]], Dict[str, Wheel]]] = {}
        self._runtimes: Dict[Any, Runtime] = {}

    def detect(self, fn: Optional[Callable]) -> Dict[str, List[str]]:
        """``{distribution: reasons}`` the function's code imports (before the closure)."""
        modules: Dict[str, str] = {}
        if fn is not None:
            modules, local_modules = function_imports(fn)
            for top, reason in self.local_imports.get(local_modules).items():
                modules.setdefault(top, reason)
        local = _local_roots()
        found: Dict[str, List[str]] = {}
        for top, reason in sorted(modules.items()):
            if top in _STDLIB or top in local or top.startswith("wrencore") or top == "__main__":
                continue
            for dist in self.installed.by_module.get(top, ()):
                found.setdefault(dist, []).append(f"{top}: {reason}")
        return found

    def resolve(self, fn: Optional[Callable], *, mode: str = "auto",
                requirements: Sequence[str] = (), base: Sequence[str] = ("wrencore",),
                target: Optional[Target] = None) -> Runtime:
        """The runtime of a job. ``mode``: ``"auto"`` (detected + requirements) or
        ``"explicit"`` (requirements only); ``base`` is what the backend's worker needs."""
        target = target or Target()
        with self._lock:
            self.installed.refresh()
            detected = self.detect(fn) if mode == "auto" else {}
            roots: Dict[str, Tuple[Tuple[str, ...], str]] = {}
            for text in base:
                req = _requirement(text)
                roots[canonical_name(req.name)] = (tuple(sorted(req.extras)), "wrencore worker code")
            for name, reasons in detected.items():
                roots.setdefault(name, ((), reasons[0]))
            missing = self._split_requirements(requirements, roots)
            closure = self.installed.closure(roots)
            versions = {name: self.installed.version(name) or "" for name in closure}
            reasons = {name: list(r) for name, r in closure.items()}
            for name, reasons_list in detected.items():
                reasons.setdefault(name, [])
                for r in reasons_list:
                    if r not in reasons[name]:
                        reasons[name].append(r)
            digests = {}
            for name in closure:
                if not self.installed.packed_from_source(name):
                    continue
                digest = self.wheels.source_digest(self.installed.dists[name],
                                                   self.installed.by_module)
                if digest:
                    digests[name] = digest
            downloaded: Dict[str, Wheel] = {}
            if missing:
                got, why = self._download_missing(missing, versions, target)
                for name, wheel in got.items():
                    versions[name] = wheel.version
                    digests.pop(name, None)
                    reasons[name] = why.get(name, reasons.get(name, []))
                downloaded = got
            key = (json.dumps([sorted(versions.items()), sorted(digests.items()),
                               target.python, target.platform]))
            runtime = self._runtimes.get(key)
            if runtime is not None:
                runtime.reasons = reasons
                return runtime
            runtime = Runtime(target.python, target.platform, versions, digests, reasons, None)
            runtime.wheels = self._wheels(runtime, downloaded, target)
            for name, wheel in runtime.wheels.items():  # a platform download may pin anew
                runtime.distributions[name] = wheel.version
            self._runtimes[key] = runtime
            return runtime

    def _split_requirements(self, requirements: Sequence[str],
                            roots: Dict[str, Tuple[Tuple[str, ...], str]]) -> List[str]:
        """Add installed requirements that satisfy their specifier to ``roots``; return the
        others (to download)."""
        missing = []
        for text in requirements:
            req = _requirement(text)
            name = canonical_name(req.name)
            have = self.installed.version(name)
            if have is not None and (not req.specifier or req.specifier.contains(have, prereleases=True)):
                roots[name] = (tuple(sorted(req.extras)), f"requirement {text}")
            else:
                roots.pop(name, None)
                missing.append(text)
        return missing

    def _download_missing(self, missing: List[str], versions: Dict[str, str], target: Target):
        names = {canonical_name(_requirement(t).name) for t in missing}
        key = (tuple(sorted(missing)), target)
        cached = self._explicit.get(key)
        if cached is None:
            constraints = [f"{n}=={v}" for n, v in sorted(versions.items())
                           if n not in names and v and not n.startswith("wrencore")]
            wheels = download_wheels(missing, target, constraints=constraints)
            got = {w.name: w for w in wheels}
            why: Dict[str, List[str]] = {}
            for name in got:
                why[name] = ([f"requirement {t}" for t in missing
                              if canonical_name(_requirement(t).name) == name]
                             or ["required by a requirement (downloaded)"])
            cached = (why, got)
            self._explicit[key] = cached
        why, got = cached
        # Distributions already in the installed closure keep their installed build.
        return {n: w for n, w in got.items() if n in names or n not in versions}, why

    def _wheels(self, runtime: Runtime, downloaded: Dict[str, Wheel],
                target: Target) -> Dict[str, Wheel]:
        wheels: Dict[str, Wheel] = dict(downloaded)
        needs: List[str] = []
        for name, version in sorted(runtime.distributions.items()):
            if name in wheels:
                continue
            try:
                wheels[name] = self.wheels.wheel(self.installed.dists[name],
                                                 self.installed.by_module, target)
            except _NeedsDownload:
                needs.append(f"{name}=={version}")
        if needs:
            for wheel in download_wheels(needs, target, no_deps=True):
                wheels[wheel.name] = wheel
        return wheels


_resolver = Resolver()
_stored: Set[Tuple[str, str]] = set()
#: (storage, runtime hash) -> SHA-256 of the runtime's manifest as stored there.
_manifest_digests: Dict[Tuple[str, str], str] = {}
_stored_lock = threading.Lock()


def resolver() -> Resolver:
    return _resolver


def distribution_difference(there: Dict[str, str], here: Dict[str, str]) -> str:
    """``toolz 1.2.0 there, 0.12.1 here; msgpack missing there`` for two locked sets."""
    parts = []
    for name in sorted(set(there) | set(here)):
        a, b = there.get(name), here.get(name)
        if a != b:
            parts.append(f"{name} {a or 'missing'} there, {b or 'missing'} here")
    return "; ".join(parts) or "same distributions"


# -- storing ----------------------------------------------------------------------------------
def manifest_of(runtime: Runtime) -> Dict[str, Any]:
    wheels = []
    for name in sorted(runtime.wheels or {}):
        wheel = runtime.wheels[name]
        with open(wheel.path, "rb") as f:
            data = f.read()
        wheels.append({"name": name, "version": wheel.version, "file": wheel.file,
                       "size": len(data), "unpacked_size": wheel_unpacked_size(data),
                       "sha256": hashlib.sha256(data).hexdigest(), "origin": wheel.origin})
    return dict(runtime.identity(), hash=runtime.hash, wheels=wheels,
                reasons=runtime.reasons, created=time.time())


def _storage_key(storage: Storage) -> str:
    return json.dumps(storage.to_spec(), sort_keys=True)


def ensure_stored(storage: Storage, runtime: Runtime, *, bundle: bool = False) -> bool:
    """Upload the runtime's wheels and manifest unless the storage has them; True if it
    uploaded. Sets ``runtime.manifest_sha256`` to the stored manifest's digest. A process
    remembers what it stored: the warm path makes no request."""
    marker = (_storage_key(storage), runtime.hash + ("+bundle" if bundle else ""))
    digest_key = (_storage_key(storage), runtime.hash)
    if marker in _stored and digest_key in _manifest_digests:
        runtime.manifest_sha256 = _manifest_digests[digest_key]
        return False
    manifest_key = layout.runtime_manifest_key(runtime.hash)
    uploaded = False
    try:
        stored_manifest: Optional[bytes] = storage.get(manifest_key)
    except StorageKeyError:
        stored_manifest = None
    if stored_manifest is None:
        if runtime.wheels is None:
            raise RuntimeBuildError(f"runtime {runtime.hash[:16]} is not in storage and has no "
                                    f"wheels here to upload")
        manifest = manifest_of(runtime)
        for entry in manifest["wheels"]:
            with open(runtime.wheels[entry["name"]].path, "rb") as f:
                storage.put(layout.runtime_wheel_key(runtime.hash, entry["file"]), f.read())
        stored_manifest = json.dumps(manifest, indent=1, sort_keys=True).encode()
        storage.put(manifest_key, stored_manifest)
        uploaded = True
        logger.info("stored runtime %s (%d distributions, %.1f MB)", runtime.hash[:16],
                    len(manifest["wheels"]), sum(w["size"] for w in manifest["wheels"]) / 1e6)
    if bundle and (uploaded or not storage.exists(layout.runtime_bundle_key(runtime.hash))):
        storage.put(layout.runtime_bundle_key(runtime.hash), bundle_of(storage, runtime.hash))
    runtime.manifest_sha256 = hashlib.sha256(stored_manifest).hexdigest()
    with _stored_lock:
        _stored.add(marker)
        _manifest_digests[digest_key] = runtime.manifest_sha256
    return uploaded


def bundle_of(storage: Storage, runtime_hash: str) -> bytes:
    """One tar of the stored wheels and manifest (an instance's bootstrap fetches it)."""
    manifest = json.loads(storage.get(layout.runtime_manifest_key(runtime_hash)))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for entry in manifest["wheels"] + [{"file": "runtime.json"}]:
            key = (layout.runtime_manifest_key(runtime_hash) if entry["file"] == "runtime.json"
                   else layout.runtime_wheel_key(runtime_hash, entry["file"]))
            data = storage.get(key)
            info = tarfile.TarInfo(entry["file"])
            info.size, info.mtime = len(data), 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def load_named(storage: Storage, name: str) -> Runtime:
    """A runtime stored earlier, by ``sha256:<hash>`` (or a unique prefix of the hash)."""
    wanted = name.split(":", 1)[1] if name.startswith("sha256:") else name
    if len(wanted) < 64:
        matches = {k.split("/")[1] for k in storage.list(f"{layout.RUNTIMES}{wanted}")
                   if k.endswith("/runtime.json")}
        if len(matches) != 1:
            raise ConfigError(f"runtime {name!r} {'is ambiguous' if matches else 'is not in storage'}"
                              f"; `wrencore runtime list` shows the stored runtimes")
        wanted = matches.pop()
    try:
        data = storage.get(layout.runtime_manifest_key(wanted))
    except StorageKeyError:
        raise ConfigError(f"runtime {name!r} is not in storage {storage!r}; build it with "
                          f"`wrencore runtime build` or use runtime=\"auto\"") from None
    runtime = Runtime.from_manifest(json.loads(data))
    runtime.manifest_sha256 = hashlib.sha256(data).hexdigest()
    with _stored_lock:
        _stored.add((_storage_key(storage), runtime.hash))
        _manifest_digests[(_storage_key(storage), runtime.hash)] = runtime.manifest_sha256
    return runtime


def list_stored(storage: Storage) -> List[Dict[str, Any]]:
    found = []
    for key in storage.list(layout.RUNTIMES):
        if key.endswith("/runtime.json"):
            found.append(json.loads(storage.get(key)))
    return sorted(found, key=lambda m: m.get("created", 0))


def delete_stored(storage: Storage, runtime_hash: str) -> int:
    with _stored_lock:
        for marker in [m for m in _stored if m[1].startswith(runtime_hash)]:
            _stored.discard(marker)
            _manifest_digests.pop(marker, None)
    return storage.delete_prefix(layout.runtime_prefix(runtime_hash))


# -- the executor's entry point -------------------------------------------------------------------
def job_runtime(fn: Callable, option: Any, requirements: Any, storage: Storage,
                backend: Any) -> Optional[Runtime]:
    """The runtime a job runs with (stored in ``storage``), or None for the backend's own
    environment. ``option``: None (the backend's default), ``"auto"``, ``"explicit"``,
    ``"isolated"`` (auto, and local workers run in it), ``"none"``, or ``"sha256:…"``."""
    option = option if option is not None else getattr(backend, "default_runtime", None)
    requirements = read_requirements(requirements)
    if option is None and requirements:
        option = "auto"
    if option in (None, "none", False):
        return None
    if not isinstance(option, str):
        raise ConfigError(f"runtime must be 'auto', 'explicit', 'isolated', 'none' or "
                          f"'sha256:…', not {option!r}")
    if option.startswith("sha256:") or re.fullmatch(r"[0-9a-f]{64}", option):
        return load_named(storage, option)
    if option not in ("auto", "explicit", "isolated"):
        raise ConfigError(f"runtime must be 'auto', 'explicit', 'isolated', 'none' or "
                          f"'sha256:…', not {option!r}")
    runtime = _resolver.resolve(
        fn, mode="explicit" if option == "explicit" else "auto", requirements=requirements,
        base=getattr(backend, "runtime_requirements", ("wrencore",)),
        target=Target(platform=getattr(backend, "runtime_platform", None) or PLATFORM))
    ensure_stored(storage, runtime)
    return runtime
