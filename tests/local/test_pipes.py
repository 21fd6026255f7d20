"""The local pool's pipes: a reader thread per worker and one I/O thread for what a
worker's stdin had no room for, frames read in any pieces, task frames larger than a pipe,
and the short report of a plain successful call."""

from __future__ import annotations

import os
import pickle
import threading

import wrencore
from wrencore_local.framing import FrameReader, encode_frame

MIB = 1 << 20


def _length(blob):
    return len(blob)


def _shout(x):
    print("out", x)
    return x


def _same(x):
    return x


def _mib(i):
    return bytes([i]) * MIB


def test_frames_are_read_whole_from_pieces_of_any_size():
    objects = [("done", [(i, None, pickle.dumps(i), (1.5, "w"))], ("k", "h")) for i in range(50)]
    objects.append(("big", b"x" * 300_000))
    stream = b"".join(encode_frame(obj) for obj in objects)
    for piece in (1, 7, 8, 9, 4096, 65536, len(stream)):
        reader = FrameReader()
        got = []
        for start in range(0, len(stream), piece):
            got.extend(reader.feed(stream[start:start + piece]))
        assert got == objects, piece
    read_end, write_end = os.pipe()  # read(): a large frame goes straight to its own buffer
    os.set_blocking(read_end, False)
    reader, got = FrameReader(), []
    try:
        for start in range(0, len(stream), 50_000):
            os.write(write_end, stream[start:start + 50_000])
            while True:
                try:
                    got.extend(reader.read(read_end))
                except BlockingIOError:
                    break
        os.close(write_end)
        assert reader.read(read_end) is None  # the end of the stream
    finally:
        os.close(read_end)
    assert got == objects


def test_a_reader_per_worker_and_one_io_thread_for_frames_larger_than_a_pipe():
    blobs = [bytes([i]) * MIB for i in range(12)]  # task frames of several MiB each way
    before = set(threading.enumerate())  # other tests' pools may still be closing
    with wrencore.Executor(backend="local", max_workers=3) as executor:
        assert list(executor.map(_length, blobs)) == [MIB] * 12
        assert list(executor.map(_mib, range(12))) == blobs
        new = [t for t in threading.enumerate()
               if t not in before and t.name.startswith("wrencore-local")]
        pool = executor.backend.pool
        readers = sorted(t.name for t in new if t.name.startswith("wrencore-local-reader-"))
        assert readers == sorted(f"wrencore-local-reader-{w.index}" for w in pool._workers)
        # No writer threads: what a pipe had no room for, the one I/O thread writes.
        assert [t for t in new if t.name not in readers
                and t.name != "wrencore-local-forkserver"] == [pool._io._thread]


def test_short_reports_carry_the_same_metadata_as_statuses():
    with wrencore.Executor(backend="local", max_workers=1) as executor:
        quiet, loud = executor.submit(_same, 1), executor.submit(_shout, 2)
        assert (quiet.result(timeout=60), loud.result(timeout=60)) == (1, 2)
    assert loud.stdout == "out 2\n" and quiet.stdout == ""  # a status, and a short report
    assert set(quiet.metadata) == set(loud.metadata)
    for key in ("worker_start_timestamp", "worker_end_timestamp", "worker_exec_time",
                "worker_id", "worker_pid", "host_submit_timestamp", "host_status_timestamp",
                "host_result_time"):
        assert quiet.metadata[key] is not None, key
    assert quiet.metadata["worker_pid"] == loud.metadata["worker_pid"]
