"""Signed task messages: workers run only what their owner's clients sent.

A worker unpickles what it receives, and unpickling is running code, so every task message
(queue body or Lambda event), every large Lambda payload reference and every job header
travels in an *envelope* whose tag is an HMAC-SHA256 over the exact bytes of the message
text, made with a key only the owner's clients and workers hold::

    {"protocol": 1, "signed": "task", "key": "<key id>", "tag": "<hex>",
     "body": "<the message's JSON text>"}

The tag covers ``"wrencore-<kind>-v1\\n" + body`` (UTF-8), so a job header cannot pass for a
task message, nor a task message for a payload reference. A worker verifies the tag before
it parses the body — so before anything is unpickled, imported (a storage spec names a
class) or read from storage — with :meth:`Verifier.open_task`; a message that does not
verify raises :class:`~wrencore_runtime.errors.MessageRefusedError`, which the daemon and
the Lambda handler log, count and send on towards the dead-letter queue.

Storage objects that a message names (the function package, staged arguments, a large
payload) are bound to it by digest: the signed job carries ``function_sha256``, a call with
staged arguments ``args_sha256``, a payload reference ``sha256``. A worker checks the digest
after reading and before unpickling, so someone who can write under the job prefix cannot
swap them.

Keys: a :class:`KeyRing` is a list of keys, the newest signing, older ones accepted until
their ``not_after`` (the rotation's grace period). It lives in a :class:`KeySource`: the
cloud's secret store (``wrencore_aws.ssm.SsmKeySource``, an SSM Parameter Store SecureString readable
only by the workers' role and the owner) or a private file (:class:`FileKeySource`, mode
0600, for ``wrencore worker`` and GCP). The key never travels in a message, in user-data,
in a Lambda environment variable or in the job storage: those carry only the source's
*name* (``{"class": "module:Class", "config": {...}}``, like a storage spec).

The local backend signs nothing: its pipes and its work directory are private to the
client's own processes (the worker processes are the client's children, connected by
inherited pipes), so whoever can write to them can already run code as the user.
"""

from __future__ import annotations

import abc
import base64
import hmac
import json
import json.scanner
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import PROTOCOL_VERSION, spec_class
from .digest import check_digest, sha256_hex
from .errors import MessageRefusedError, WrenError
from .protocol import _jsonable_to_bytes

#: ``check_digest`` and ``sha256_hex`` live in :mod:`wrencore_runtime.digest` (a worker that
#: only checks digests need not load this module) and stay importable from here.
_DIGESTS = (check_digest, sha256_hex)

logger = logging.getLogger(__name__)

KIND_TASK = "task"
KIND_JOB = "job"
KIND_PAYLOAD = "payload"
#: A Lambda event that hands the function calls to invoke itself (``wrencore_aws_lambda``).
KIND_RELAY = "relay"
#: A message text longer than this is refused before it is parsed (queues carry 256 KiB,
#: asynchronous Lambda events 256 KB; larger messages travel as payload references).
MAX_MESSAGE_BYTES = 1024 * 1024
#: Seconds a retired key is still accepted after a rotation, unless the rotation says.
DEFAULT_GRACE = 3600.0
#: A verifier reloads its key ring, when a message names a key it does not know, at most
#: this often: soon enough that a rotated-in key costs a message at most one receive, rarely
#: enough that a stream of forged messages cannot hammer the secret store.
RELOAD_INTERVAL = 1.0
#: Seconds a worker keeps a key ring before reading it again, so that a retired key stops
#: being accepted when its grace period ends even on a worker that never met the new key.
REFRESH_INTERVAL = 60.0


# ------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------


@dataclass
class TaskKey:
    key_id: str
    secret: bytes
    #: Unix timestamp after which the key is no longer accepted (None: the signing key).
    not_after: Optional[float] = None

    def tag(self, kind: str, text: bytes) -> str:
        # hmac.digest: OpenSSL's one-shot HMAC, without the HMAC object of hmac.new.
        return hmac.digest(self.secret, f"wrencore-{kind}-v1\n".encode() + text,
                           "sha256").hex()


class KeyRing:
    """The keys of one deployment: the newest signs, retired ones verify until ``not_after``."""

    def __init__(self, keys: List[TaskKey]) -> None:
        if not keys or keys[-1].not_after is not None:
            raise WrenError("a task key ring needs a current key (the last, with no not_after)")
        self.keys = list(keys)

    @classmethod
    def generate(cls) -> "KeyRing":
        return cls([_new_key()])

    @property
    def current(self) -> TaskKey:
        return self.keys[-1]

    def find(self, key_id: str) -> Optional[TaskKey]:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        return None

    def rotated(self, grace: float = DEFAULT_GRACE, now: Optional[float] = None) -> "KeyRing":
        """A ring with a new signing key; the old ones are accepted for ``grace`` more seconds."""
        now = time.time() if now is None else now
        kept = [TaskKey(k.key_id, k.secret, min(k.not_after or now + grace, now + grace))
                for k in self.keys if k.not_after is None or k.not_after > now]
        return KeyRing(kept + [_new_key()])

    def to_json(self) -> str:
        return json.dumps({"version": 1, "keys": [
            {"id": k.key_id, "secret": base64.b64encode(k.secret).decode("ascii"),
             "not_after": k.not_after} for k in self.keys]})

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "KeyRing":
        try:
            data = json.loads(text)
            keys = [TaskKey(str(k["id"]), base64.b64decode(k["secret"]),
                            None if k.get("not_after") is None else float(k["not_after"]))
                    for k in data["keys"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise WrenError(f"the task key ring is not valid: {type(exc).__name__}: {exc}; "
                            f"write a new one with KeyRing.generate()") from exc
        return cls(keys)

    # -- signing and verifying --------------------------------------------------------
    def seal(self, kind: str, body: str) -> Dict[str, Any]:
        """The envelope of ``body`` (JSON text), tagged with the current key."""
        key = self.current
        return {"protocol": PROTOCOL_VERSION, "signed": kind, "key": key.key_id,
                "tag": key.tag(kind, body.encode("utf-8")), "body": body}

    def unseal(self, envelope: Any, kind: str, now: Optional[float] = None) -> str:
        """The verified body text of ``envelope``; :class:`MessageRefusedError` if it is not."""
        body, key_id, tag = _envelope_fields(envelope, kind)
        key = self.find(key_id)
        if key is None:
            raise MessageRefusedError(
                f"the message is signed with key {key_id!r}, which this worker does not hold "
                f"(another deployment's key, or one retired longer ago than the grace period)")
        if key.not_after is not None and (time.time() if now is None else now) > key.not_after:
            raise MessageRefusedError(
                f"the message is signed with key {key_id!r}, retired at {key.not_after:.0f} "
                f"(its grace period is over)")
        if not hmac.compare_digest(key.tag(kind, body.encode("utf-8")), tag):
            raise MessageRefusedError(
                "the message's authentication tag does not verify: it was forged or altered "
                "after its client signed it")
        return body


def _new_key() -> TaskKey:
    import secrets  # (and random) only where keys are made, not in every worker

    return TaskKey(f"k{int(time.time())}-{secrets.token_hex(4)}", secrets.token_bytes(32))


def _envelope_fields(envelope: Any, kind: str):
    if not isinstance(envelope, dict):
        raise MessageRefusedError(f"the message is a JSON {type(envelope).__name__}, not an "
                                  f"object")
    if envelope.get("protocol") != PROTOCOL_VERSION:
        raise MessageRefusedError(f"the message has protocol {envelope.get('protocol')!r}; "
                                  f"this worker speaks wrencore protocol {PROTOCOL_VERSION}")
    if "signed" not in envelope:
        raise MessageRefusedError("the message is not signed (no authentication tag); "
                                  "workers run only messages their owner's clients signed")
    if envelope.get("signed") != kind:
        raise MessageRefusedError(f"the message is a signed {envelope.get('signed')!r}, "
                                  f"not a {kind}")
    fields = {name: envelope.get(name) for name in ("body", "key", "tag")}
    wrong = [name for name, value in fields.items() if not isinstance(value, str)]
    if wrong:
        raise MessageRefusedError(f"the message's envelope lacks string field(s) "
                                  f"{', '.join(wrong)}")
    if len(fields["body"]) > MAX_MESSAGE_BYTES:
        raise MessageRefusedError(f"the message's body is {len(fields['body'])} characters, "
                                  f"over the {MAX_MESSAGE_BYTES} a task message can be")
    return fields["body"], fields["key"], fields["tag"]


# ------------------------------------------------------------------------------------
# where keys live
# ------------------------------------------------------------------------------------


class KeySource(abc.ABC):
    """Where a deployment's key ring is kept; rebuilt on workers from :meth:`to_spec`."""

    config: Dict[str, Any]

    @abc.abstractmethod
    def load(self) -> Optional[KeyRing]:
        """The key ring, or None if none was created yet."""

    @abc.abstractmethod
    def store(self, ring: KeyRing) -> None:
        """Write the key ring (clients only: workers may read it, never write it)."""

    def ensure(self) -> KeyRing:
        """The key ring, created on first use."""
        ring = self.load()
        if ring is None:
            self.store(KeyRing.generate())
            ring = self.load()
        assert ring is not None
        return ring

    def rotate(self, grace: float = DEFAULT_GRACE) -> KeyRing:
        """Start signing with a new key; workers accept the old ones for ``grace`` seconds."""
        ring = self.ensure().rotated(grace)
        self.store(ring)
        return ring

    def to_spec(self) -> Dict[str, Any]:
        cls = type(self)
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "config": dict(self.config)}


class FileKeySource(KeySource):
    """A key ring in a file only its owner can read (mode 0600); group or world access to
    it is refused, as ssh refuses a readable private key."""

    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path)
        self.config = {"path": path}

    def load(self) -> Optional[KeyRing]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise WrenError(f"the task key file {self.path} can be read by others (mode "
                                f"{stat.S_IMODE(mode):o}); run chmod 600 {self.path}")
            return KeyRing.from_json(f.read())

    def store(self, ring: KeyRing) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = f"{self.path}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ring.to_json())
        os.replace(tmp, self.path)


def default_key_file() -> str:
    """The task key file of ``wrencore worker`` and its clients when none is named:
    ``$WRENCORE_TASK_KEY_FILE``, else ``~/.config/wrencore/task-key.json``."""
    return os.environ.get("WRENCORE_TASK_KEY_FILE") or os.path.join(
        os.path.expanduser("~"), ".config", "wrencore", "task-key.json")


def key_source_from_spec(spec: Dict[str, Any]) -> KeySource:
    """Rebuild a key source from its spec (the worker's own settings, never a message)."""
    obj = spec_class(spec)
    if not (isinstance(obj, type) and issubclass(obj, KeySource)):
        raise WrenError(f"{spec['class']} is not a wrencore KeySource")
    return obj(**spec.get("config", {}))


# ------------------------------------------------------------------------------------
# the two sides
# ------------------------------------------------------------------------------------


class Signer:
    """A client's side: seals messages with the current key, re-read every ``refresh`` s
    so a rotation done elsewhere is picked up."""

    def __init__(self, source: KeySource, refresh: float = 60.0) -> None:
        self.source, self.refresh = source, refresh
        self._ring: Optional[KeyRing] = None
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    def ring(self, max_age: Optional[float] = None) -> KeyRing:
        """The key ring, read again if older than ``max_age`` (default ``refresh``) s."""
        limit = self.refresh if max_age is None else max_age
        with self._lock:
            if self._ring is None or time.monotonic() - self._loaded_at > limit:
                self._ring = self.source.ensure()
                self._loaded_at = time.monotonic()
            return self._ring

    def seal(self, kind: str, body: str) -> Dict[str, Any]:
        return self.ring().seal(kind, body)

    def seal_text(self, kind: str, body: str) -> str:
        return json.dumps(self.seal(kind, body), separators=(",", ":"))


class Verifier:
    """A worker's side: opens sealed messages, refusing every one that does not verify.

    ``source`` None (a worker started without a task key) refuses every message and says
    how to configure one. ``refused`` counts the refusals. The ring is read again every
    ``refresh`` seconds (a failed read keeps the old one), and when a message names a key
    it does not hold (at most every :data:`RELOAD_INTERVAL`; such a message waits for it).
    """

    def __init__(self, source: Optional[KeySource], refresh: float = REFRESH_INTERVAL) -> None:
        self.source = source
        self.refresh = refresh
        self._read_for_unknown_key = False
        self.refused = 0
        self._ring: Optional[KeyRing] = None
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: Optional[Dict[str, Any]]) -> "Verifier":
        return cls(key_source_from_spec(spec) if spec else None)

    def _load(self) -> KeyRing:
        with self._lock:
            age = time.monotonic() - self._loaded_at
            if self._ring is not None and age > self.refresh:
                try:
                    self._read()
                except Exception as exc:  # the store unreachable: the ring we hold still holds
                    logger.warning("could not read the task key again (keeping the one read "
                                   "%.0f s ago): %s: %s", age, type(exc).__name__, exc)
                    self._loaded_at = time.monotonic()
            if self._ring is None:
                self._read()
            return self._ring

    def _reload_for(self, key_id: str) -> KeyRing:
        """The ring read again for a message naming ``key_id``, which the held ring lacks
        (rotated since?). Reads happen at most every :data:`RELOAD_INTERVAL`. A message
        arriving sooner after a routine read (start, refresh) waits for the next one, so
        a rotation made just after that read refuses nothing; sooner after a read made for
        another unknown key, it is refused at once (a stream of forged messages costs one
        read a second, and no waiting)."""
        with self._lock:
            if self._ring is not None and self._ring.find(key_id) is not None:
                return self._ring  # another thread read it meanwhile
            wait = RELOAD_INTERVAL - (time.monotonic() - self._loaded_at)
            if wait > 0 and self._ring is not None and self._read_for_unknown_key:
                return self._ring
            if wait > 0:
                time.sleep(wait)
            self._read()
            self._read_for_unknown_key = True
            assert self._ring is not None
            return self._ring

    def _read(self) -> None:
        if self.source is None:
            raise MessageRefusedError(
                "this worker has no task key, so it cannot verify any message: give it the "
                "key source its clients sign with (daemon setting task_key, `wrencore worker "
                "--key-file`, or WRENCORE_TASK_KEY on Lambda)")
        ring = self.source.load()
        if ring is None:
            raise MessageRefusedError(
                f"the task key source {self.source.config} holds no key yet; its clients "
                f"create it on first use")
        self._ring, self._loaded_at = ring, time.monotonic()
        self._read_for_unknown_key = False

    def prefetch(self) -> None:
        """Load the key ring now (a Lambda sandbox does it during init, outside any
        invocation's time); a failure is only logged: the first message loads it again."""
        try:
            self._load()
        except Exception as exc:
            logger.warning("could not load the task key yet: %s: %s", type(exc).__name__, exc)

    def open_task(self, message: Union[str, bytes, Dict[str, Any]],
                  allow_payload: bool = False, allow_relay: bool = False) -> Dict[str, Any]:
        """The verified task message of a queue body (text) or a Lambda event (dict).

        With ``allow_payload``, a signed payload reference is also accepted, and returned as
        ``{"payload": {"storage": spec, "key": str, "sha256": str}}``; with ``allow_relay``,
        a signed relay event, returned as ``{"relay": {...}}`` (see :func:`decode_relay`).
        """
        if type(message) is str and not allow_relay and not allow_payload:
            task = self._open_task_quickly(message)
            if task is not None:
                return task
        try:
            envelope = parse_text(message) if isinstance(message, (str, bytes)) else message
            kind = envelope.get("signed") if isinstance(envelope, dict) else None
            if allow_relay and kind == KIND_RELAY:
                return decode_relay(self.unseal(envelope, KIND_RELAY))
            payload = allow_payload and kind == KIND_PAYLOAD
            body = self.unseal(envelope, KIND_PAYLOAD if payload else KIND_TASK)
            return decode_payload_ref(body) if payload else decode_task(body)
        except MessageRefusedError:
            self.refused += 1
            raise

    def _open_task_quickly(self, text: str) -> Optional[Dict[str, Any]]:
        """The task message of queue body ``text`` when it verifies and decodes as a
        well-formed task message under a key held and current; else None, and the
        caller takes the full path, which says what is wrong (or reads the key ring
        again). The same checks as that path, without its steps: every queue message
        of a daemon goes through here."""
        ring = self._ring
        if ring is None or len(text) > MAX_MESSAGE_BYTES \
                or time.monotonic() - self._loaded_at > self.refresh:
            return None
        try:
            envelope, end = _scan_json(text, 0)
            if end != len(text) or type(envelope) is not dict:
                return None
            body, tag = envelope.get("body"), envelope.get("tag")
            if envelope.get("signed") != KIND_TASK \
                    or envelope.get("protocol") != PROTOCOL_VERSION \
                    or type(body) is not str or type(tag) is not str \
                    or len(body) > MAX_MESSAGE_BYTES:
                return None
            key = ring.find(envelope.get("key"))
            if key is None or key.not_after is not None \
                    or not hmac.compare_digest(key.tag(KIND_TASK, body.encode("utf-8")), tag):
                return None
            message, end = _scan_body(body, 0)
        except Exception:  # (StopIteration: not JSON at all) the full path says what
            return None
        if end != len(body) or type(message) is not dict:
            return None
        job, calls = message.get("job"), message.get("calls")
        if type(job) is not dict or type(calls) is not list \
                or type(job.get("job_id")) is not str \
                or type(job.get("function_key")) is not str \
                or type(job.get("storage")) is not dict:
            return None
        for call in calls:
            if type(call) is not dict or type(call.get("call_id")) is not str or (
                    type(call.get("args")) is not bytes
                    and type(call.get("args_key")) is not str):
                return None
        return message

    def unseal(self, envelope: Any, kind: str) -> str:
        ring = self._load()
        if isinstance(envelope, dict) and isinstance(envelope.get("key"), str) \
                and ring.find(envelope["key"]) is None:
            ring = self._reload_for(envelope["key"])  # rotated since we read it?
        return ring.unseal(envelope, kind)


def open_or_refuse(verifier: Verifier, message: Union[str, bytes, Dict[str, Any]],
                   message_id: str, receive_count: int = 1,
                   allow_payload: bool = False,
                   allow_relay: bool = False) -> Optional[Dict[str, Any]]:
    """The verified task message, or None — after a log line saying why — if it is refused.

    Errors other than a refusal (the key source unreachable) propagate: the message is
    not to blame, and comes back later.
    """
    try:
        return verifier.open_task(message, allow_payload=allow_payload,
                                  allow_relay=allow_relay)
    except MessageRefusedError as exc:
        logger.error("refused message %s (receive %d; %d refused by this worker): %s. Nothing "
                     "of it was run or read; it goes on to the dead-letter queue.",
                     message_id, receive_count, verifier.refused, exc.reason)
        return None


def _scanner(decoder: json.JSONDecoder) -> Callable[[str, int], Tuple[Any, int]]:
    """``decoder``'s scanner: ``(value, end)`` of the JSON value at an index, without the
    whitespace skipping of ``decode`` (task messages have none)."""
    return json.scanner.make_scanner(decoder)  # type: ignore[attr-defined]


#: The scanners of a task message's envelope and of its body (bytes in base64).
_scan_json = _scanner(json.JSONDecoder())
_scan_body = _scanner(json.JSONDecoder(object_hook=_jsonable_to_bytes))


def parse_text(text: Union[str, bytes]) -> Any:
    if len(text) > MAX_MESSAGE_BYTES:
        raise MessageRefusedError(f"the message is {len(text)} bytes, over the "
                                  f"{MAX_MESSAGE_BYTES} a task message can be")
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageRefusedError(f"the message is not JSON: {exc}") from None


def _require(obj: Dict[str, Any], name: str, types: Any, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, types):
        raise MessageRefusedError(f"{where} has no valid {name!r} (got "
                                  f"{type(value).__name__})")
    return value


def decode_task(body: str) -> Dict[str, Any]:
    """A verified task message body, decoded and checked for the fields workers rely on."""
    from .protocol import decode_json

    if len(body) > MAX_MESSAGE_BYTES:
        raise MessageRefusedError(f"the message is {len(body)} bytes, over the "
                                  f"{MAX_MESSAGE_BYTES} a task message can be")
    try:
        message = decode_json(body)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:  # not JSON, bad base64
        raise MessageRefusedError(f"the signed body does not decode: {exc}") from None
    if not isinstance(message, dict):
        raise MessageRefusedError("the signed body is not a task message object")
    job = _require(message, "job", dict, "the task message")
    for name in ("job_id", "function_key"):
        _require(job, name, str, "the job")
    _require(job, "storage", dict, "the job")
    calls = _require(message, "calls", list, "the task message")
    for call in calls:
        if not isinstance(call, dict):
            raise MessageRefusedError("a call of the task message is not an object")
        _require(call, "call_id", str, "a call")
        if not isinstance(call.get("args"), bytes):
            _require(call, "args_key", str, f"call {call['call_id']} (no inline args)")
    return message


def decode_relay(body: str) -> Dict[str, Any]:
    """A verified relay event: ``{"relay": {"function": str, "region": str or None,
    "endpoint_url": str or None, "job": {...}, "calls": [{"call_id": str, "attempt": int,
    "event": str}, ...]}}``; each ``event`` is a task event signed on its own, which the
    invocation it starts verifies again."""
    relay = parse_text(body)
    if not isinstance(relay, dict):
        raise MessageRefusedError("the signed relay event is not an object")
    _require(relay, "function", str, "the relay event")
    job = _require(relay, "job", dict, "the relay event")
    _require(job, "job_id", str, "the relay event's job")
    _require(job, "storage", dict, "the relay event's job")
    for call in _require(relay, "calls", list, "the relay event"):
        if not isinstance(call, dict):
            raise MessageRefusedError("a call of the relay event is not an object")
        _require(call, "call_id", str, "a call of the relay event")
        _require(call, "event", str, "a call of the relay event")
    return {"relay": relay}


def decode_payload_ref(body: str) -> Dict[str, Any]:
    """A verified payload reference: ``{"storage": spec, "key": str, "sha256": str}``."""
    ref = parse_text(body)
    if not isinstance(ref, dict):
        raise MessageRefusedError("the signed payload reference is not an object")
    _require(ref, "storage", dict, "the payload reference")
    _require(ref, "key", str, "the payload reference")
    _require(ref, "sha256", str, "the payload reference")
    return {"payload": ref}
