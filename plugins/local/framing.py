"""Length-prefixed pickle frames over a byte stream (the local worker's pipes)."""

from __future__ import annotations

import pickle
import struct
from typing import Any, BinaryIO, List

_HEADER = struct.Struct("!Q")


def encode_frame(obj: Any) -> bytes:
    """``obj`` as one frame: its pickle's length, then the pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def write_frame(stream: BinaryIO, obj: Any) -> None:
    stream.write(encode_frame(obj))
    stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """The next object, or raise EOFError when the stream ends."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("stream closed")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("stream closed mid-frame")
    return pickle.loads(data)


class FrameReader:
    """Frames from a stream read in pieces of any size (a non-blocking pipe's reads)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> List[Any]:
        """The frames that ``data`` completes, in order (the rest waits for more)."""
        buffer = self._buffer
        if not buffer and len(data) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(data)
            if len(data) == _HEADER.size + size:  # the usual case: exactly one whole frame
                return [pickle.loads(memoryview(data)[_HEADER.size:])]
        buffer += data
        frames = []
        start, end = 0, len(buffer)
        view = memoryview(buffer)
        try:
            while end - start >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer, start)
                if end - start - _HEADER.size < size:
                    break
                start += _HEADER.size
                frames.append(pickle.loads(view[start:start + size]))
                start += size
        finally:
            view.release()
            del buffer[:start]
        return frames
