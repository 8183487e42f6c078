"""Streamed transactions held until they commit, in bounded memory.

With ``use_streaming`` the server sends a large transaction in chunks while it is
still running. Its changes may not be delivered before the transaction commits, so
they are kept here as the raw pgoutput frames: compact, and parsed only once, at
commit. Past ``limit_bytes`` the frames go to an anonymous temporary file, which the
operating system removes when it is closed, or when the process dies.
"""

import struct
import tempfile
from typing import IO, Iterator, Optional, Set, Tuple

__all__ = ["HeldTransaction"]

# subxid, the frame's WAL position, the frame's length
_RECORD = struct.Struct(">IQI")
#: The temporary file's buffer: small frames are read from it without a system call each.
_FILE_BUFFER = 1 << 20


class HeldTransaction:
    """The frames of one top-level streamed transaction, in arrival order."""

    def __init__(self, xid: int, limit_bytes: int) -> None:
        self.xid = xid
        self._limit = limit_bytes
        self._buffer = bytearray()
        self._file: Optional[IO[bytes]] = None
        self._aborted: Set[int] = set()
        self.frames_held = 0

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def append(self, subxid: int, lsn: int, payload: bytes) -> None:
        header = _RECORD.pack(subxid, lsn, len(payload))
        if self._file is None and len(self._buffer) + len(header) + len(payload) > self._limit:
            self._file = tempfile.TemporaryFile(prefix="flash_wal-", buffering=_FILE_BUFFER)
            self._file.write(self._buffer)
            self._buffer = bytearray()
        if self._file is not None:
            self._file.write(header)
            self._file.write(payload)
        else:
            self._buffer += header
            self._buffer += payload
        self.frames_held += 1

    def abort_subtransaction(self, subxid: int) -> None:
        """Drop the changes of one subtransaction (ROLLBACK TO SAVEPOINT)."""
        self._aborted.add(subxid)

    def frames(self) -> Iterator[Tuple[int, bytes]]:
        """``(lsn, payload)`` of every frame not rolled back, in arrival order."""
        aborted = self._aborted
        for subxid, lsn, payload in self._records():
            if subxid not in aborted:
                yield lsn, payload

    def _records(self) -> Iterator[Tuple[int, int, bytes]]:
        unpack_from, header_size = _RECORD.unpack_from, _RECORD.size
        if self._file is None:
            data, pos = self._buffer, 0
            while pos < len(data):
                subxid, lsn, length = unpack_from(data, pos)
                pos += header_size
                yield subxid, lsn, bytes(data[pos:pos + length])  # one frame copied, not all
                pos += length
            return
        # Each frame is read whole after its header, in one call: reading fixed chunks
        # and joining the rest of a frame to each would copy a large frame over and
        # over. Memory is bounded by the largest frame.
        file = self._file
        file.flush()
        file.seek(0)
        read, unpack = file.read, _RECORD.unpack
        while True:
            header = read(header_size)
            if not header:
                return
            subxid, lsn, length = unpack(header)
            yield subxid, lsn, read(length)

    def close(self) -> None:
        """Forget everything; the temporary file, if any, is removed."""
        self._buffer = bytearray()
        if self._file is not None:
            self._file.close()
            self._file = None
