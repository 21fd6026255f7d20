"""The storage contract every storage must keep, as one suite each storage subclasses.

A subclass provides the ``store`` fixture (a fresh, empty storage under a prefix) and
``other_store`` (another prefix of the same place). See ``wrencore_runtime.storage``.
"""

from __future__ import annotations

import os
import threading

import pytest

from wrencore.errors import StorageKeyError
from wrencore_runtime import storage as storage_module
from wrencore_runtime.storage import storage_from_spec


class StorageSuite:
    def test_put_get_roundtrip(self, store):
        store.put("job1/00000/status.json", b'{"ok": true}')
        assert store.get("job1/00000/status.json") == b'{"ok": true}'

    def test_missing_key_means_not_yet(self, store):
        with pytest.raises(StorageKeyError):
            store.get("nope/00000/status.json")
        assert store.exists("nope/00000/status.json") is False
        store.put("nope/00000/status.json", b"x")
        assert store.exists("nope/00000/status.json") is True

    def test_empty_and_binary_objects(self, store):
        data = os.urandom(300 * 1024)
        store.put("empty", b"")
        store.put("binary", data)
        assert store.get("empty") == b"" and store.get("binary") == data

    def test_readers_see_the_old_or_the_new_object_never_a_part(self, store):
        old, new = b"a" * 200_000, b"b" * 300_000
        store.put("status.json", old)
        seen, stop = set(), threading.Event()

        def read():
            while not stop.is_set():
                seen.add(store.get("status.json"))

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for _ in range(3):
                store.put("status.json", new)
                store.put("status.json", old)
        finally:
            stop.set()
            reader.join()
        assert seen <= {old, new}

    def test_list_and_delete_prefix_stay_inside_the_prefix(self, store, other_store):
        for i in range(3):
            store.put(f"j/{i:05d}/status.json", b"{}")
        store.put("k/00000/status.json", b"{}")
        other_store.put("j/00000/status.json", b"{}")
        assert store.list("j/") == [f"j/{i:05d}/status.json" for i in range(3)]
        assert store.list("nothing/") == []
        assert store.delete_prefix("j/") == 3
        assert store.list("j/") == []
        assert store.list("k/") == ["k/00000/status.json"]
        assert other_store.list("j/") == ["j/00000/status.json"]

    def test_spec_rebuilds_an_equal_storage(self, store):
        spec = store.to_spec()
        storage_module._spec_cache.clear()
        rebuilt = storage_from_spec(spec)
        store.put("spec/x", b"1")
        assert type(rebuilt) is type(store) and rebuilt.get("spec/x") == b"1"
        assert rebuilt.to_spec() == spec
