"""How pgoutput lays out its fields, and the error every reader raises.

Integers are big-endian; LSNs, xids and OIDs unsigned; timestamps signed int64
microseconds since 2000-01-01 UTC; strings NUL-terminated UTF-8. A row is TupleData: a
column count, then per column a kind byte (``t`` text, ``b`` binary, ``n`` NULL, ``u``
unchanged TOASTed value) and, for text and binary, an Int32 length and the bytes.

Fields are read with precompiled :class:`struct.Struct` objects through
``unpack_from`` on the original ``bytes``; the only copies made are the values
themselves (column data, names). Offsets count from the start of the payload (type
byte = offset 0), so an error names the byte where the frame went wrong.

:func:`read_tuple` is the hot path (every change reads one or two); it has a plain
twin, :func:`read_tuple_plain`, written the obvious way. The two give the same values
and the same errors for any input (tests/unit/test_hot_path.py), and docs/performance.rst
says what the fast one saves.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ..sentinels import UNCHANGED_TOAST
from .messages import BinaryValue, ColumnValue

__all__ = [
    "Malformed",
    "U8",
    "U32",
    "I32",
    "U64",
    "byte_repr",
    "check_end",
    "read_fixed",
    "read_string",
    "read_tuple",
    "read_tuple_plain",
    "timestamp",
    "trailing",
    "truncated",
]

U8 = struct.Struct(">B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
I32 = struct.Struct(">i")
U64 = struct.Struct(">Q")

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)

KIND_TEXT = ord("t")
KIND_NULL = ord("n")
KIND_UNCHANGED = ord("u")
KIND_BINARY = ord("b")


class Malformed(Exception):
    """Raised by the readers; the parser turns it into a ProtocolError that also names
    the message type (which a reader of one field does not know)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(offset, reason)
        self.offset = offset
        self.reason = reason


def byte_repr(value: int) -> str:
    return repr(bytes((value,)))


def truncated(buf: bytes, off: int, what: str) -> Malformed:
    return Malformed(off, f"frame ({len(buf)} bytes) ends inside {what}")


def trailing(buf: bytes, off: int) -> Malformed:
    return Malformed(off, f"{len(buf) - off} unexpected trailing bytes")


def check_end(buf: bytes, off: int) -> None:
    if off != len(buf):
        raise trailing(buf, off)


def read_fixed(buf: bytes, off: int, layout: struct.Struct, what: str) -> tuple[Any, ...]:
    try:
        return layout.unpack_from(buf, off)
    except struct.error as exc:
        raise truncated(buf, off, what) from exc


def timestamp(micros: int, off: int) -> datetime:
    try:
        return _PG_EPOCH + timedelta(microseconds=micros)
    except OverflowError as exc:
        raise Malformed(off, f"timestamp {micros} is out of range") from exc


def read_string(buf: bytes, off: int, what: str) -> tuple[str, int]:
    """Read a NUL-terminated UTF-8 string; returns it and the offset after the NUL."""
    try:
        end = buf.index(b"\0", off)
    except ValueError as exc:
        raise Malformed(off, f"{what} has no terminating NUL") from exc
    try:
        return buf[off:end].decode("utf-8"), end + 1
    except UnicodeDecodeError as exc:
        raise Malformed(off + exc.start, f"{what} is not valid UTF-8") from exc


def read_tuple(
    buf: bytes,
    off: int,
    # Bound once at definition time: this is the hot loop, and a local is the cheapest
    # lookup there is.
    _unpack_u16: Callable[[bytes, int], tuple[int]] = U16.unpack_from,
    _unpack_u32: Callable[[bytes, int], tuple[int]] = U32.unpack_from,
) -> tuple[tuple[ColumnValue, ...], int]:
    """Read TupleData at ``off``; returns the values and the offset after them."""
    try:
        (ncols,) = _unpack_u16(buf, off)
    except struct.error as exc:
        raise truncated(buf, off, "the tuple's column count") from exc
    end = len(buf)
    if ncols > end - off - 2:
        raise _impossible_count(ncols, buf, off)
    off += 2
    values: list[ColumnValue] = [None] * ncols  # so a NULL costs nothing more
    i = 0
    try:
        # Text first: by far the most common kind. Lengths are read unsigned (the server
        # never sends a negative one), so a corrupt length can only run past the end,
        # which the single comparison catches before the slice. ``off`` moves past a
        # column only once it has been read whole, so on failure it points at the
        # column's kind byte.
        for i in range(ncols):
            kind = buf[off]
            if kind == KIND_TEXT:
                start = off + 5
                (size,) = _unpack_u32(buf, off + 1)
                stop = start + size
                if stop > end:
                    raise _overrun(buf, off, i, size)
                values[i] = buf[start:stop]
                off = stop
            elif kind == KIND_NULL:
                off += 1
            elif kind == KIND_UNCHANGED:
                values[i] = UNCHANGED_TOAST
                off += 1
            elif kind == KIND_BINARY:
                # The text branch again, wrapped: a shared helper would cost a call per value.
                start = off + 5
                (size,) = _unpack_u32(buf, off + 1)
                stop = start + size
                if stop > end:
                    raise _overrun(buf, off, i, size)
                values[i] = BinaryValue(buf[start:stop])
                off = stop
            else:
                raise _unknown_kind(kind, off, i)
    except (IndexError, struct.error) as exc:
        raise truncated(buf, off, f"column {i} of {ncols}") from exc
    return tuple(values), off


def read_tuple_plain(buf: bytes, off: int) -> tuple[tuple[ColumnValue, ...], int]:
    """:func:`read_tuple` written the obvious way: one column at a time, each field
    through :func:`read_fixed`. The reference the fast one is tested against."""
    (ncols,) = read_fixed(buf, off, U16, "the tuple's column count")
    if ncols > len(buf) - off - 2:
        raise _impossible_count(ncols, buf, off)
    off += 2
    values: list[ColumnValue] = []
    for i in range(ncols):
        value, off = _read_column(buf, off, i, ncols)
        values.append(value)
    return tuple(values), off


def _read_column(buf: bytes, off: int, i: int, ncols: int) -> tuple[ColumnValue, int]:
    what = f"column {i} of {ncols}"
    (kind,) = read_fixed(buf, off, U8, what)
    if kind == KIND_NULL:
        return None, off + 1
    if kind == KIND_UNCHANGED:
        return UNCHANGED_TOAST, off + 1
    if kind != KIND_TEXT and kind != KIND_BINARY:
        raise _unknown_kind(kind, off, i)
    # A truncated length is reported at the kind byte, where the column starts.
    try:
        (size,) = U32.unpack_from(buf, off + 1)
    except struct.error as exc:
        raise truncated(buf, off, what) from exc
    start = off + 5  # past the kind byte and the length
    if start + size > len(buf):
        raise _overrun(buf, off, i, size)
    data = buf[start : start + size]
    return (data if kind == KIND_TEXT else BinaryValue(data)), start + size


def _impossible_count(ncols: int, buf: bytes, off: int) -> Malformed:
    # Every column takes at least its kind byte: a corrupt count fails at once, clearly.
    left = len(buf) - off - 2
    return Malformed(off, f"column count {ncols} is impossible with {left} bytes left")


def _unknown_kind(kind: int, off: int, column: int) -> Malformed:
    return Malformed(off, f"column {column}: unknown kind {byte_repr(kind)}")


def _overrun(buf: bytes, off: int, column: int, size: int) -> Malformed:
    return Malformed(
        off,
        f"column {column}: value length {size} runs past the end of the frame "
        f"({max(len(buf) - off - 5, 0)} bytes left)",
    )
