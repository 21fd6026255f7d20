"""Length-prefixed pickle frames over a byte stream (the local worker's pipes)."""

from __future__ import annotations

import os
import pickle
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, BinaryIO, List, Optional, Tuple

_HEADER = struct.Struct("!Q")
#: Bytes read at once from a pipe, unless a larger frame is being received.
READ_SIZE = 1 << 16


def encode_frame(obj: Any) -> bytes:
    """``obj`` as one frame: its pickle's length, then the pickle."""
    return b"".join(encode_frame_parts(obj))


def encode_frame_parts(obj: Any) -> Tuple[bytes, bytes]:
    """``obj``'s frame as its header and its pickle, to be written one after the other
    (``os.writev``): joining them would copy a large frame once more."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)), data


def write_frame(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))  # not joined: that would copy a large frame
    stream.write(data)
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
    """Frames from a stream read in pieces of any size (a non-blocking pipe's reads).

    :meth:`read` reads a frame larger than ``READ_SIZE`` straight into a buffer of its size,
    so a large argument or result is copied once on its way in, not once per piece.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._large: Optional[bytearray] = None  # a large frame being read, and how much
        self._filled = 0

    def read(self, fd: int) -> Optional[List[Any]]:
        """The frames that one read of ``fd`` completes (perhaps none); None at the end of
        the stream. Raises :class:`BlockingIOError` if ``fd`` has nothing to read."""
        large = self._large
        if large is not None:
            count = os.readv(fd, [memoryview(large)[self._filled:]])
            if not count:
                return None
            self._filled += count
            if self._filled < len(large):
                return []
            self._large = None
            return [pickle.loads(large)]
        data = os.read(fd, READ_SIZE)
        if not data:
            return None
        frames = self.feed(data)
        buffer = self._buffer
        if len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            if size > READ_SIZE:  # the rest of this frame goes straight into its own buffer
                self._large = bytearray(size)
                self._filled = len(buffer) - _HEADER.size
                self._large[:self._filled] = memoryview(buffer)[_HEADER.size:]
                del buffer[:]
        return frames

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
