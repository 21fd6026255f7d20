"""moto's server with its per-request costs that grow with a queue or bucket cut down.

Run as a script (``python -m tests.servers.moto_fast [--plain] [--stats PATH] -H 127.0.0.1
-p PORT``), as ``MotoServer(fast=True)`` does for the benchmarks; ``--stats`` records each
operation's requests and CPU seconds (to profile the server), ``--plain`` leaves moto
unpatched (to compare). Every patch keeps what moto answers and changes only how much
work it does to find it; a profile of the server during fleet jobs of a few thousand
calls showed where that work went (``ReceiveMessage`` 140 ms, ``SendMessageBatch``
85 ms a request with 2,000 tasks queued; 2 to 3 ms with the patches):

* SQS: every message received read the queue's ``MessageRetentionPeriod`` through
  ``get_queue_attributes``, which builds the whole attribute dict (three times), and
  with it three scans of every message in the queue, each message asking the clock
  (through ``datetime``) whether it is visible and whether it is delayed. Every message
  sent built the attribute dict once too. The retention period is now read from the
  queue, a scan asks the clock once, and the clock is ``time.time()`` (moto's
  ``unix_time`` is the same number, computed through ``datetime`` objects). Deleting a
  message scanned the queue twice through a method call per message; once now. moto
  replaced the queue's message list without the lock ``add_message`` appends under, so
  a message sent while another was deleted could vanish (a 100,000-call job lost a
  SendMessageBatch of 10 tasks this way and waited for them forever); the shim takes
  that lock, which changes no answer moto meant to give.
* S3: a listing scanned and sorted every key of the bucket. Each bucket's key store now
  keeps its names sorted as they are added and removed, so a prefix listing reads only
  the names under the prefix.
* The server: each request listed moto's package directory (``list_of_moto_modules``,
  one ``isdir`` per service) to route it, and logged a line through werkzeug. The list
  is read once; request lines are not logged (the log keeps warnings and errors).
"""

from __future__ import annotations

import bisect
import logging
import os
import sys
import threading
import time


def _unix_time(dt=None) -> float:
    if dt is not None:
        return _moto_unix_time(dt)
    return time.time()


def _unix_time_millis(dt=None) -> float:
    return _unix_time(dt) * 1000.0


_moto_unix_time = None


def patch_sqs() -> None:
    global _moto_unix_time
    from moto.core import utils
    from moto.sqs import models
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    _moto_unix_time = utils.unix_time
    models.unix_time = _unix_time
    models.unix_time_millis = _unix_time_millis
    Queue, SQSBackend = models.Queue, models.SQSBackend

    def messages(self):
        now = time.time() * 1000.0
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def number_delayed(self):
        now = time.time() * 1000.0
        return sum(1 for m in self._messages if now < m.delayed_until)

    def number_not_visible(self):
        now = time.time() * 1000.0
        return sum(1 for m in self._messages if not now > m.visible_at)

    def number_visible(self):
        return len(self.messages)

    Queue.messages = property(messages)
    Queue.approximate_number_of_messages = property(number_visible)
    Queue.approximate_number_of_messages_delayed = property(number_delayed)
    Queue.approximate_number_of_messages_not_visible = property(number_not_visible)

    def delete_message(self, receipt_handle: str) -> None:
        if receipt_handle in self.deleted_messages:
            return  # already deleted: moto (and SQS) accept deleting it again
        found = [m for m in self._messages if receipt_handle in m.all_receipt_handles]
        if not found:
            raise ReceiptHandleIsInvalid()
        for message in found:
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
        gone = {id(m) for m in found}
        with self._messages_lock:  # add_message appends under it
            self._messages = [m for m in self._messages if id(m) not in gone]

    Queue.delete_message = delete_message

    def is_message_valid_based_on_retention_period(self, queue_name, message) -> bool:
        retention_period = self.get_queue(queue_name).message_retention_period
        return retention_period + message.sent_timestamp / 1000 > time.time()

    SQSBackend.is_message_valid_based_on_retention_period = \
        is_message_valid_based_on_retention_period


class SortedNames:
    """The names of one bucket's key store, sorted, kept as keys come and go."""

    def __init__(self, names) -> None:
        self.names = sorted(names)

    def add(self, name: str) -> None:
        i = bisect.bisect_left(self.names, name)
        if i == len(self.names) or self.names[i] != name:
            self.names.insert(i, name)

    def discard(self, name: str) -> None:
        i = bisect.bisect_left(self.names, name)
        if i < len(self.names) and self.names[i] == name:
            del self.names[i]

    def under(self, prefix: str) -> list:
        names = self.names
        start = i = bisect.bisect_left(names, prefix)
        while i < len(names) and names[i].startswith(prefix):
            i += 1
        return names[start:i]


#: Guards every key store's names and their index (the server answers in many threads).
_names_lock = threading.RLock()


def patch_s3() -> None:
    from moto.s3 import models
    from moto.s3.utils import _VersionedKeyStore as Store

    def sorted_names(store) -> SortedNames:
        index = store.__dict__.get("_sorted_names")
        if index is None or len(index.names) != dict.__len__(store):
            index = store.__dict__["_sorted_names"] = SortedNames(dict.keys(store))
        return index

    def wrap(method):
        def changing(self, key, *args, **kwargs):
            with _names_lock:
                result = method(self, key, *args, **kwargs)
                index = self.__dict__.get("_sorted_names")
                if index is not None:
                    if dict.__contains__(self, key):
                        index.add(key)
                    else:
                        index.discard(key)
                return result
        return changing

    Store.__setitem__ = wrap(Store.__setitem__)
    Store.setlist = wrap(Store.setlist)
    Store.pop = wrap(Store.pop)
    Store.__delitem__ = wrap(dict.__delitem__)

    def clear(self):
        with _names_lock:
            dict.clear(self)
            self.__dict__.pop("_sorted_names", None)

    Store.clear = clear
    original = models.S3Backend.list_objects

    def list_objects(self, bucket, prefix, delimiter, marker, max_keys):
        """moto's ``list_objects``, reading only the names under ``prefix``."""
        store = getattr(bucket, "keys", None)
        if (not prefix or not isinstance(store, Store)
                or isinstance(bucket, models.FakeTableStorageBucket)):
            return original(self, bucket, prefix, delimiter, marker, max_keys)
        with _names_lock:
            names = sorted_names(store).under(prefix)
        key_results = []
        folder_results = set()
        for key_name in names:
            try:
                key = store[key_name]
            except (KeyError, IndexError):
                continue
            key_without_prefix = key_name.replace(prefix, "", 1)
            if delimiter and delimiter in key_without_prefix:
                key_without_delimiter = key_without_prefix.split(delimiter)[0]
                folder_results.add(f"{prefix}{key_without_delimiter}{delimiter}")
            elif not isinstance(key, models.FakeDeleteMarker):
                key_results.append(key)
        key_results.sort(key=lambda key: key.name)
        folder_results = sorted(folder_results)
        if marker:
            limit = self._pagination_tokens.get(marker) or marker
            key_results = self._get_results_from_token(key_results, limit)
        if max_keys is not None:
            key_results, is_truncated, next_marker = self._truncate_result(
                key_results, max_keys)
        else:
            is_truncated, next_marker = False, None
        return key_results, folder_results, is_truncated, next_marker

    models.S3Backend.list_objects = list_objects


def patch_server() -> None:
    from moto import backends
    from moto.moto_server import werkzeug_app

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    werkzeug_app.backends.list_of_moto_modules = backends.list_of_moto_modules
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def install() -> None:
    patch_sqs()
    patch_s3()
    patch_server()


def operation_name(handler, action) -> str:
    """``service:Operation`` of a request the server has answered (S3 by method, and
    ``List`` for listings: its REST API names no operation)."""
    auth = handler.headers.get("Authorization", "")
    scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/") if "Credential=" in auth \
        else []
    service = scope[3] if len(scope) > 3 else "?"
    if action:
        return f"{service}:{action}"
    target = handler.headers.get("X-Amz-Target", "")
    if target:
        return f"{service}:{target.rsplit('.', 1)[-1]}"
    if service == "s3":
        path, _, query = handler.path.partition("?")
        if handler.command == "GET" and ("list-type=" in query or path.count("/") <= 1):
            return "s3:List"
        return f"s3:{handler.command}"
    return f"{service}:{handler.command}"


def record_requests(path: str) -> None:
    """Write, when the server exits, each operation's request count and the CPU seconds
    its requests took (the answering thread's own time, from reading the request to
    writing the response), with the process's CPU seconds, as JSON to ``path``."""
    import atexit
    import json

    from moto.core.responses import BaseResponse
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    stats: dict = {}
    lock = threading.Lock()
    local = threading.local()
    call_action = BaseResponse.call_action

    def recording_call_action(self):
        local.action = self._get_action()
        return call_action(self)

    handle_one_request = MotoRequestHandler.handle_one_request

    answering = [0]  # requests being answered: their clients may already have the answer

    def recording_handle_one_request(self):
        local.action = None
        with lock:
            answering[0] += 1
        cpu = time.thread_time()
        try:
            handle_one_request(self)
        finally:
            spent = time.thread_time() - cpu
            with lock:
                answering[0] -= 1
                if getattr(self, "raw_requestline", None) and getattr(self, "command", None):
                    entry = stats.setdefault(operation_name(self, local.action), [0, 0.0])
                    entry[0] += 1
                    entry[1] += spent

    def write() -> None:
        deadline = time.monotonic() + 1  # long polls still waiting are not waited for
        while answering[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        times = os.times()
        with lock, open(path, "w") as f:
            json.dump({"process_cpu": times.user + times.system,
                       "operations": {k: {"requests": n, "cpu": cpu}
                                      for k, (n, cpu) in stats.items()}}, f)

    BaseResponse.call_action = recording_call_action
    MotoRequestHandler.handle_one_request = recording_handle_one_request
    atexit.register(write)


def main(argv) -> int:
    """``[--plain] [--stats PATH]`` then moto.server's own arguments."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--plain", action="store_true", help="moto unpatched (to compare)")
    parser.add_argument("--stats", help="write each operation's requests and CPU here at exit")
    args, rest = parser.parse_known_args(argv)
    if not args.plain:
        install()
    if args.stats:
        record_requests(args.stats)
    from moto.server import main as moto_main

    return moto_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
