"""Sans-I/O parser for PostgreSQL's ``pgoutput`` logical replication protocol.

Bytes in, message objects out, in the manner of h11's readers and events: this module
never touches a socket or a driver. Whoever reads the replication stream hands each
XLogData payload (``ReplicationMessage.payload`` in psycopg2) to
:meth:`PgOutputParser.parse` and gets back one immutable message object (:class:`Begin`,
:class:`Insert`, :class:`Commit`, ...).

Design
------
* One small frozen, slotted attrs class per pgoutput message, one reader method per
  message. ``parse`` dispatches on the first byte through a 256-entry tuple of bound
  methods, so dispatch is one index and one call.
* The only state is "inside a streamed block or not" (between Stream Start and Stream
  Stop, protocol 2+). Inside a block the change messages (Relation, Type, Insert, Update,
  Delete, Truncate, Message) start with an extra Int32 xid. Rather than test a flag on
  every message, the parser swaps between two dispatch tables; the tables also encode
  which messages are legal where and for the configured protocol version, so a stream
  that got out of step is reported instead of silently misread.
* Fields are read with precompiled :class:`struct.Struct` objects through
  ``unpack_from`` on the original ``bytes``; the only copies made are the values
  themselves (column data, names).
* Column values are not decoded: a text value stays ``bytes`` (the decoding layer hands
  it straight to psycopg2's typecasters), a binary value is wrapped in
  :class:`BinaryValue`, a NULL is ``None`` and an unchanged TOASTed value is
  :data:`~flash_wal.sentinels.UNCHANGED_TOAST`.
* Every malformed frame (truncated, trailing bytes, unknown byte codes, impossible counts,
  lengths running past the end, invalid UTF-8, out-of-range timestamps) raises
  :class:`~flash_wal.errors.ProtocolError` naming the message type and the byte offset
  (counted from the start of the payload, type byte = offset 0), chained to the
  low-level exception where there is one. Nothing else escapes ``parse`` for any input
  ``bytes``.

Integers are big-endian. LSNs, xids and OIDs are unsigned, timestamps are signed int64
microseconds since 2000-01-01 UTC and come out as timezone-aware UTC datetimes.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, NoReturn, Optional, Union

import attr

from .errors import ConfigurationError, ProtocolError
from .sentinels import UNCHANGED_TOAST, _UnchangedToast

__all__ = [
    "Begin",
    "BeginPrepare",
    "BinaryValue",
    "Column",
    "ColumnValue",
    "Commit",
    "CommitPrepared",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "PgOutputMessage",
    "PgOutputParser",
    "Prepare",
    "Relation",
    "RollbackPrepared",
    "StreamAbort",
    "StreamCommit",
    "StreamPrepare",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "Type",
    "Update",
]


# --------------------------------------------------------------------------- values


@attr.s(frozen=True, slots=True, auto_attribs=True, repr=False)
class BinaryValue:
    """A column value the server sent in binary format (option ``binary``, PG14+).

    Text values are plain ``bytes``; this wrapper lets the decoder tell the two apart.
    """

    data: bytes

    def __repr__(self) -> str:
        return f"BinaryValue({self.data!r})"


#: One column of a tuple: ``None`` (NULL), ``bytes`` (text format, undecoded),
#: :class:`BinaryValue` (binary format) or ``UNCHANGED_TOAST``.
ColumnValue = Union[None, bytes, BinaryValue, _UnchangedToast]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Column:
    """One column of a :class:`Relation`."""

    name: str
    type_oid: int
    #: ``atttypmod``; -1 when the type has no modifier.
    type_modifier: int
    #: Part of the replica identity (every column is under REPLICA IDENTITY FULL).
    is_key: bool


# ------------------------------------------------------------------------- messages


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Begin:
    """``B``: a transaction starts. ``final_lsn`` is the LSN of its commit record."""

    final_lsn: int
    commit_time: datetime
    xid: int


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Commit:
    """``C``: a transaction ends. Acknowledging ``end_lsn`` confirms all of it."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Origin:
    """``O``: the replication origin the transaction came from."""

    origin_lsn: int
    name: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Relation:
    """``R``: describes a table before the first change that uses it.

    ``namespace`` is kept as sent: the server sends ``""`` for ``pg_catalog``.
    ``replica_identity`` is one of ``"d"`` (default), ``"n"`` (nothing), ``"f"`` (full),
    ``"i"`` (index).
    """

    xid: Optional[int]
    relid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Type:
    """``Y``: names a non-built-in type (OID >= 10000) before its first use.

    A domain is announced with its base type's namespace and name. ``namespace`` is
    ``""`` for ``pg_catalog``, as for :class:`Relation`.
    """

    xid: Optional[int]
    type_oid: int
    namespace: str
    name: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Insert:
    """``I``: a new row."""

    xid: Optional[int]
    relid: int
    new: tuple[ColumnValue, ...]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Update:
    """``U``: a changed row.

    ``old`` is ``None`` when the server sent no old tuple (REPLICA IDENTITY DEFAULT or
    INDEX and the key did not change). ``old_is_key`` is True when the old tuple holds
    only the key columns (``K``; the other columns are ``None``), False for a full old row
    (``O``) or no old tuple.
    """

    xid: Optional[int]
    relid: int
    old: Optional[tuple[ColumnValue, ...]]
    old_is_key: bool
    new: tuple[ColumnValue, ...]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Delete:
    """``D``: a deleted row; ``old_is_key`` as for :class:`Update`."""

    xid: Optional[int]
    relid: int
    old: tuple[ColumnValue, ...]
    old_is_key: bool


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Truncate:
    """``T``: TRUNCATE of one or more tables."""

    xid: Optional[int]
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Message:
    """``M``: a ``pg_logical_emit_message()`` record (option ``messages``)."""

    xid: Optional[int]
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamStart:
    """``S``: a block of a large in-progress transaction follows (protocol 2+)."""

    xid: int
    first_segment: bool


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamStop:
    """``E``: the end of a streamed block."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamCommit:
    """``c``: a streamed transaction committed."""

    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamAbort:
    """``A``: a streamed (sub)transaction aborted; ``subxid == xid`` for the top level.

    ``abort_lsn`` and ``abort_time`` are sent only with ``streaming 'parallel'``
    (protocol 4) and are ``None`` otherwise.
    """

    xid: int
    subxid: int
    abort_lsn: Optional[int] = None
    abort_time: Optional[datetime] = None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class BeginPrepare:
    """``b``: a two-phase transaction starts (protocol 3+, option ``two_phase``)."""

    prepare_lsn: int
    end_lsn: int
    prepare_time: datetime
    xid: int
    gid: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Prepare:
    """``P``: PREPARE TRANSACTION of the transaction opened by :class:`BeginPrepare`."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: datetime
    xid: int
    gid: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CommitPrepared:
    """``K``: COMMIT PREPARED."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime
    xid: int
    gid: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RollbackPrepared:
    """``r``: ROLLBACK PREPARED."""

    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_time: datetime
    rollback_time: datetime
    xid: int
    gid: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamPrepare:
    """``p``: PREPARE TRANSACTION of a streamed transaction."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: datetime
    xid: int
    gid: str


PgOutputMessage = Union[
    Begin,
    Commit,
    Origin,
    Relation,
    Type,
    Insert,
    Update,
    Delete,
    Truncate,
    Message,
    StreamStart,
    StreamStop,
    StreamCommit,
    StreamAbort,
    BeginPrepare,
    Prepare,
    CommitPrepared,
    RollbackPrepared,
    StreamPrepare,
]

# ------------------------------------------------------------------ wire primitives

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">BQQq")
_RELID_ACTION = struct.Struct(">IB")
_RELATION_TAIL = struct.Struct(">BH")
_COLUMN_TYPE = struct.Struct(">Ii")
_TRUNCATE_HEAD = struct.Struct(">IB")
_MESSAGE_HEAD = struct.Struct(">BQ")
_STREAM_START = struct.Struct(">IB")
_STREAM_COMMIT = struct.Struct(">IBQQq")
_STREAM_ABORT = struct.Struct(">II")
_STREAM_ABORT_PARALLEL = struct.Struct(">IIQq")
_BEGIN_PREPARE = struct.Struct(">QQqI")
_PREPARE = struct.Struct(">BQQqI")
_ROLLBACK_PREPARED = struct.Struct(">BQQqqI")

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_REPLICA_IDENTITIES = frozenset(b"dnfi")

# A Relation column takes at least ten bytes (flags, an empty name's NUL, type OID,
# typmod), a tuple column at least one (its kind). Counts are checked against the bytes
# left up front, so a corrupt count fails at once with a clear message.
_MIN_RELATION_COLUMN_SIZE = 10

_KIND_TEXT = ord("t")
_KIND_NULL = ord("n")
_KIND_UNCHANGED = ord("u")
_KIND_BINARY = ord("b")
_RELID_ACTION_WHAT = "the relation id and tuple marker"
_NEW = ord("N")
_OLD_KEY = ord("K")
_OLD_ROW = ord("O")


class _Malformed(Exception):
    """Raised by the readers; ``parse`` turns it into ProtocolError with the type name."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(offset, reason)
        self.offset = offset
        self.reason = reason


def _byte_repr(value: int) -> str:
    return repr(bytes((value,)))


def _truncated(buf: bytes, off: int, what: str) -> _Malformed:
    return _Malformed(off, f"frame ({len(buf)} bytes) ends inside {what}")


def _trailing(buf: bytes, off: int) -> _Malformed:
    return _Malformed(off, f"{len(buf) - off} unexpected trailing bytes")


def _check_end(buf: bytes, off: int) -> None:
    if off != len(buf):
        raise _trailing(buf, off)


def _timestamp(micros: int, off: int) -> datetime:
    try:
        return _PG_EPOCH + timedelta(microseconds=micros)
    except OverflowError as exc:
        raise _Malformed(off, f"timestamp {micros} is out of range") from exc


def _read_string(buf: bytes, off: int, what: str) -> tuple[str, int]:
    """Read a NUL-terminated UTF-8 string; returns it and the offset after the NUL."""
    try:
        end = buf.index(b"\0", off)
    except ValueError as exc:
        raise _Malformed(off, f"{what} has no terminating NUL") from exc
    try:
        return buf[off:end].decode("utf-8"), end + 1
    except UnicodeDecodeError as exc:
        raise _Malformed(off + exc.start, f"{what} is not valid UTF-8") from exc


def _read_tuple(
    buf: bytes,
    off: int,
    # Bound once at definition time: this is the hot loop, and a local is the cheapest
    # lookup there is.
    _unpack_u16: Callable[[bytes, int], tuple[int]] = _U16.unpack_from,
    _unpack_u32: Callable[[bytes, int], tuple[int]] = _U32.unpack_from,
) -> tuple[tuple[ColumnValue, ...], int]:
    """Read TupleData at ``off``; returns the values and the offset after them."""
    try:
        (ncols,) = _unpack_u16(buf, off)
    except struct.error as exc:
        raise _truncated(buf, off, "the tuple's column count") from exc
    end = len(buf)
    if ncols > end - off - 2:
        raise _Malformed(off, f"column count {ncols} is impossible with {end - off - 2} bytes left")
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
            if kind == _KIND_TEXT:
                start = off + 5
                (size,) = _unpack_u32(buf, off + 1)
                stop = start + size
                if stop > end:
                    raise _overrun(buf, off, i, size)
                values[i] = buf[start:stop]
                off = stop
            elif kind == _KIND_NULL:
                off += 1
            elif kind == _KIND_UNCHANGED:
                values[i] = UNCHANGED_TOAST
                off += 1
            elif kind == _KIND_BINARY:
                start = off + 5
                (size,) = _unpack_u32(buf, off + 1)
                stop = start + size
                if stop > end:
                    raise _overrun(buf, off, i, size)
                values[i] = BinaryValue(buf[start:stop])
                off = stop
            else:
                raise _Malformed(off, f"column {i}: unknown kind {_byte_repr(kind)}")
    except (IndexError, struct.error) as exc:
        raise _truncated(buf, off, f"column {i} of {ncols}") from exc
    return tuple(values), off


def _invalid(payload: bytes, exc: _Malformed) -> ProtocolError:
    return ProtocolError(
        f"invalid {_NAMES.get(payload[0], 'pgoutput')} message at byte {exc.offset}: {exc.reason}"
    )


def _overrun(buf: bytes, off: int, column: int, size: int) -> _Malformed:
    return _Malformed(
        off,
        f"column {column}: value length {size} runs past the end of the frame "
        f"({max(len(buf) - off - 5, 0)} bytes left)",
    )


def _read_fixed(buf: bytes, off: int, layout: struct.Struct, what: str) -> tuple[Any, ...]:
    try:
        return layout.unpack_from(buf, off)
    except struct.error as exc:
        raise _truncated(buf, off, what) from exc


_Reader = Callable[[bytes], PgOutputMessage]

_STREAM_STOP = StreamStop()


# ---------------------------------------------------------------------------- parser


class PgOutputParser:
    """Turns pgoutput payloads into message objects, one payload per :meth:`parse`.

    ``protocol_version`` is the ``proto_version`` option given to START_REPLICATION;
    messages the server cannot send at that version are rejected. ``parallel_streaming``
    must match ``streaming 'parallel'`` (protocol 4+), which adds two fields to Stream
    Abort.

    The parser remembers whether it is inside a streamed block. Use a new parser (or
    :meth:`reset`) for a new replication connection: a connection lost mid-block would
    otherwise leave it expecting the block's xid fields.
    """

    __slots__ = ("protocol_version", "parallel_streaming", "_table", "_outside", "_inside")

    def __init__(self, protocol_version: int = 1, parallel_streaming: bool = False) -> None:
        if type(protocol_version) is not int or protocol_version < 1:
            raise ConfigurationError(
                f"protocol_version must be an integer >= 1, not {protocol_version!r}"
            )
        if parallel_streaming and protocol_version < 4:
            raise ConfigurationError(
                f"parallel_streaming needs protocol_version 4 or later (got {protocol_version})"
            )
        self.protocol_version = protocol_version
        self.parallel_streaming = parallel_streaming
        self._outside, self._inside = self._build_tables(protocol_version)
        self._table = self._outside

    @property
    def in_stream(self) -> bool:
        """True between a Stream Start and its Stream Stop."""
        return self._table is self._inside

    def reset(self) -> None:
        """Forget any streamed block in progress (for a new connection)."""
        self._table = self._outside

    def parse(self, payload: bytes) -> PgOutputMessage:
        """Parse one complete pgoutput message.

        ``payload`` must be ``bytes`` (text values are slices of it). Raises
        :class:`ProtocolError` for any malformed or out-of-place message.
        """
        # Called once per message, so the table lookup is written out here rather
        # than shared with parse_held through a helper.
        if not payload:
            raise ProtocolError("empty pgoutput payload")
        try:
            return self._table[payload[0]](payload)
        except _Malformed as exc:
            raise _invalid(payload, exc) from exc.__cause__

    def parse_held(self, payload: bytes) -> PgOutputMessage:
        """Parse a message that was received inside a streamed block and held for
        later, whatever the parser's state now (which it leaves alone)."""
        if payload[:1] == b"E" and self.protocol_version >= 2:  # it would change the state
            raise ProtocolError("invalid Stream Stop message at byte 0: a Stream Stop is never held")
        if not payload:
            raise ProtocolError("empty pgoutput payload")
        try:
            return self._inside[payload[0]](payload)
        except _Malformed as exc:
            raise _invalid(payload, exc) from exc.__cause__

    # -- dispatch tables

    def _build_tables(self, version: int) -> tuple[tuple[_Reader, ...], tuple[_Reader, ...]]:
        """Dispatch tables for outside and inside a streamed block, by type byte."""
        outside: dict[str, _Reader] = {
            "B": self._read_begin,
            "C": self._read_commit,
            "O": self._read_origin,
            "R": self._read_relation,
            "Y": self._read_type,
            "I": self._read_insert,
            "U": self._read_update,
            "D": self._read_delete,
            "T": self._read_truncate,
            "M": self._read_message,
        }
        inside: dict[str, _Reader] = {}
        if version >= 2:
            outside["S"] = self._read_stream_start
            outside["c"] = self._read_stream_commit
            outside["A"] = self._read_stream_abort
            inside["E"] = self._read_stream_stop
            # pgoutput sends Origin right after Stream Start, without an xid.
            inside["O"] = self._read_origin
            for code in "RYIUDTM":
                inside[code] = _with_xid(outside[code])
        if version >= 3:
            outside["b"] = self._read_begin_prepare
            outside["P"] = self._read_prepare
            outside["K"] = self._read_commit_prepared
            outside["r"] = self._read_rollback_prepared
            outside["p"] = self._read_stream_prepare
        return (
            _dispatch_table(outside, inside, "outside a streamed block", version),
            _dispatch_table(inside, outside, "inside a streamed block", version),
        )

    # -- transaction control

    def _read_begin(self, buf: bytes) -> Begin:
        final_lsn, micros, xid = _read_fixed(buf, 1, _BEGIN, "the Begin fields")
        _check_end(buf, 1 + _BEGIN.size)
        return Begin(final_lsn, _timestamp(micros, 9), xid)

    def _read_commit(self, buf: bytes) -> Commit:
        flags, commit_lsn, end_lsn, micros = _read_fixed(buf, 1, _COMMIT, "the Commit fields")
        _check_end(buf, 1 + _COMMIT.size)
        return Commit(flags, commit_lsn, end_lsn, _timestamp(micros, 18))

    def _read_origin(self, buf: bytes) -> Origin:
        (origin_lsn,) = _read_fixed(buf, 1, _U64, "the origin LSN")
        name, off = _read_string(buf, 9, "origin name")
        _check_end(buf, off)
        return Origin(origin_lsn, name)

    # -- schema

    def _read_relation(self, buf: bytes, off: int = 1, xid: Optional[int] = None) -> Relation:
        (relid,) = _read_fixed(buf, off, _U32, "the relation id")
        namespace, off = _read_string(buf, off + 4, "namespace")
        name, off = _read_string(buf, off, "relation name")
        replica_identity, ncols = _read_fixed(
            buf, off, _RELATION_TAIL, "the replica identity and column count"
        )
        if replica_identity not in _REPLICA_IDENTITIES:
            raise _Malformed(off, f"unknown replica identity {_byte_repr(replica_identity)}")
        off += 3
        if ncols * _MIN_RELATION_COLUMN_SIZE > len(buf) - off:
            raise _Malformed(
                off - 2, f"column count {ncols} is impossible with {len(buf) - off} bytes left"
            )
        columns = []
        for i in range(ncols):
            (flags,) = _read_fixed(buf, off, _U8, f"column {i}")
            column_name, off = _read_string(buf, off + 1, f"column {i} name")
            type_oid, type_modifier = _read_fixed(buf, off, _COLUMN_TYPE, f"column {i} type")
            off += 8
            columns.append(Column(column_name, type_oid, type_modifier, bool(flags & 1)))
        _check_end(buf, off)
        return Relation(xid, relid, namespace, name, chr(replica_identity), tuple(columns))

    def _read_type(self, buf: bytes, off: int = 1, xid: Optional[int] = None) -> Type:
        (type_oid,) = _read_fixed(buf, off, _U32, "the type OID")
        namespace, off = _read_string(buf, off + 4, "namespace")
        name, off = _read_string(buf, off, "type name")
        _check_end(buf, off)
        return Type(xid, type_oid, namespace, name)

    # -- changes

    def _read_insert(self, buf: bytes, off: int = 1, xid: Optional[int] = None) -> Insert:
        # The hot path: helpers are inlined here on purpose.
        try:
            relid, action = _RELID_ACTION.unpack_from(buf, off)
        except struct.error as exc:
            raise _truncated(buf, off, _RELID_ACTION_WHAT) from exc
        if action != _NEW:
            raise _Malformed(off + 4, f"expected b'N', got {_byte_repr(action)}")
        new, off = _read_tuple(buf, off + 5)
        if off != len(buf):
            raise _trailing(buf, off)
        return Insert(xid, relid, new)

    def _read_update(self, buf: bytes, off: int = 1, xid: Optional[int] = None) -> Update:
        relid, action = _read_fixed(buf, off, _RELID_ACTION, _RELID_ACTION_WHAT)
        off += 5
        old = None
        old_is_key = False
        if action == _OLD_KEY or action == _OLD_ROW:
            old_is_key = action == _OLD_KEY
            old, off = _read_tuple(buf, off)
            if off >= len(buf):
                raise _truncated(buf, off, "the new tuple marker")
            action = buf[off]
            off += 1
            if action != _NEW:
                raise _Malformed(off - 1, f"expected b'N', got {_byte_repr(action)}")
        elif action != _NEW:
            raise _Malformed(off - 1, f"expected b'K', b'O' or b'N', got {_byte_repr(action)}")
        new, off = _read_tuple(buf, off)
        _check_end(buf, off)
        return Update(xid, relid, old, old_is_key, new)

    def _read_delete(self, buf: bytes, off: int = 1, xid: Optional[int] = None) -> Delete:
        relid, action = _read_fixed(buf, off, _RELID_ACTION, _RELID_ACTION_WHAT)
        if action != _OLD_KEY and action != _OLD_ROW:
            raise _Malformed(off + 4, f"expected b'K' or b'O', got {_byte_repr(action)}")
        old, off = _read_tuple(buf, off + 5)
        _check_end(buf, off)
        return Delete(xid, relid, old, action == _OLD_KEY)

    def _read_truncate(self, buf: bytes, off: int = 1, xid: Optional[int] = None) -> Truncate:
        nrels, flags = _read_fixed(buf, off, _TRUNCATE_HEAD, "the Truncate header")
        off += 5
        if nrels * 4 > len(buf) - off:
            raise _Malformed(
                off - 5, f"{nrels} relation ids do not fit in the {len(buf) - off} bytes left"
            )
        relids = struct.unpack_from(f">{nrels}I", buf, off)
        _check_end(buf, off + nrels * 4)
        return Truncate(xid, relids, bool(flags & 1), bool(flags & 2))

    def _read_message(self, buf: bytes, off: int = 1, xid: Optional[int] = None) -> Message:
        flags, lsn = _read_fixed(buf, off, _MESSAGE_HEAD, "the Message header")
        prefix, off = _read_string(buf, off + 9, "prefix")
        (size,) = _read_fixed(buf, off, _I32, "the content length")
        if size < 0 or off + 4 + size > len(buf):
            raise _Malformed(
                off, f"content length {size} does not fit in the {len(buf) - off - 4} bytes left"
            )
        _check_end(buf, off + 4 + size)
        return Message(xid, bool(flags & 1), lsn, prefix, buf[off + 4 : off + 4 + size])

    # -- streaming (protocol 2+)

    def _read_stream_start(self, buf: bytes) -> StreamStart:
        xid, first_segment = _read_fixed(buf, 1, _STREAM_START, "the Stream Start fields")
        _check_end(buf, 1 + _STREAM_START.size)
        self._table = self._inside
        return StreamStart(xid, first_segment == 1)

    def _read_stream_stop(self, buf: bytes) -> StreamStop:
        _check_end(buf, 1)
        self._table = self._outside
        return _STREAM_STOP

    def _read_stream_commit(self, buf: bytes) -> StreamCommit:
        xid, flags, commit_lsn, end_lsn, micros = _read_fixed(
            buf, 1, _STREAM_COMMIT, "the Stream Commit fields"
        )
        _check_end(buf, 1 + _STREAM_COMMIT.size)
        return StreamCommit(xid, flags, commit_lsn, end_lsn, _timestamp(micros, 22))

    def _read_stream_abort(self, buf: bytes) -> StreamAbort:
        if self.parallel_streaming:
            xid, subxid, abort_lsn, micros = _read_fixed(
                buf, 1, _STREAM_ABORT_PARALLEL, "the Stream Abort fields"
            )
            _check_end(buf, 1 + _STREAM_ABORT_PARALLEL.size)
            return StreamAbort(xid, subxid, abort_lsn, _timestamp(micros, 17))
        xid, subxid = _read_fixed(buf, 1, _STREAM_ABORT, "the Stream Abort fields")
        _check_end(buf, 1 + _STREAM_ABORT.size)
        return StreamAbort(xid, subxid)

    # -- two-phase commit (protocol 3+)

    def _read_begin_prepare(self, buf: bytes) -> BeginPrepare:
        prepare_lsn, end_lsn, micros, xid = _read_fixed(
            buf, 1, _BEGIN_PREPARE, "the Begin Prepare fields"
        )
        gid, off = _read_string(buf, 1 + _BEGIN_PREPARE.size, "gid")
        _check_end(buf, off)
        return BeginPrepare(prepare_lsn, end_lsn, _timestamp(micros, 17), xid, gid)

    def _read_prepare(self, buf: bytes) -> Prepare:
        return Prepare(*self._read_prepare_fields(buf))

    def _read_stream_prepare(self, buf: bytes) -> StreamPrepare:
        return StreamPrepare(*self._read_prepare_fields(buf))

    def _read_prepare_fields(self, buf: bytes) -> tuple[int, int, int, datetime, int, str]:
        flags, prepare_lsn, end_lsn, micros, xid = _read_fixed(
            buf, 1, _PREPARE, "the Prepare fields"
        )
        gid, off = _read_string(buf, 1 + _PREPARE.size, "gid")
        _check_end(buf, off)
        return flags, prepare_lsn, end_lsn, _timestamp(micros, 18), xid, gid

    def _read_commit_prepared(self, buf: bytes) -> CommitPrepared:
        flags, commit_lsn, end_lsn, micros, xid = _read_fixed(
            buf, 1, _PREPARE, "the Commit Prepared fields"
        )
        gid, off = _read_string(buf, 1 + _PREPARE.size, "gid")
        _check_end(buf, off)
        return CommitPrepared(flags, commit_lsn, end_lsn, _timestamp(micros, 18), xid, gid)

    def _read_rollback_prepared(self, buf: bytes) -> RollbackPrepared:
        flags, prepare_end_lsn, rollback_end_lsn, prepare_us, rollback_us, xid = _read_fixed(
            buf, 1, _ROLLBACK_PREPARED, "the Rollback Prepared fields"
        )
        gid, off = _read_string(buf, 1 + _ROLLBACK_PREPARED.size, "gid")
        _check_end(buf, off)
        return RollbackPrepared(
            flags,
            prepare_end_lsn,
            rollback_end_lsn,
            _timestamp(prepare_us, 18),
            _timestamp(rollback_us, 26),
            xid,
            gid,
        )


# ------------------------------------------------------------- dispatch table helpers

_NAMES: dict[int, str] = {
    ord(code): cls.__name__
    for code, cls in {
        "B": Begin,
        "C": Commit,
        "O": Origin,
        "R": Relation,
        "Y": Type,
        "I": Insert,
        "U": Update,
        "D": Delete,
        "T": Truncate,
        "M": Message,
        "S": StreamStart,
        "E": StreamStop,
        "c": StreamCommit,
        "A": StreamAbort,
        "b": BeginPrepare,
        "P": Prepare,
        "K": CommitPrepared,
        "r": RollbackPrepared,
        "p": StreamPrepare,
    }.items()
}


def _with_xid(read: Callable[..., PgOutputMessage]) -> _Reader:
    """Wrap a change reader for use inside a streamed block, where an xid comes first."""

    def read_streamed(buf: bytes) -> PgOutputMessage:
        try:
            (xid,) = _U32.unpack_from(buf, 1)
        except struct.error as exc:
            raise _truncated(buf, 1, "the transaction id") from exc
        return read(buf, 5, xid)

    return read_streamed


def _dispatch_table(
    readers: dict[str, _Reader], elsewhere: dict[str, _Reader], where: str, version: int
) -> tuple[_Reader, ...]:
    """A reader for each of the 256 type bytes; those not in ``readers`` raise."""
    table: list[_Reader] = []
    for code in map(chr, range(256)):
        if code in readers:
            table.append(readers[code])
        elif code in elsewhere:
            table.append(_misplaced(where))
        elif ord(code) in _NAMES:
            table.append(_unsupported(_NAMES[ord(code)], version))
        else:
            table.append(_unknown)
    return tuple(table)


def _misplaced(where: str) -> _Reader:
    def read(buf: bytes) -> NoReturn:
        raise _Malformed(0, f"not expected {where}")

    return read


def _unsupported(name: str, version: int) -> _Reader:
    def read(buf: bytes) -> NoReturn:
        raise _Malformed(0, f"{name} is not sent at protocol version {version}")

    return read


def _unknown(buf: bytes) -> NoReturn:
    raise ProtocolError(f"unknown pgoutput message type {_byte_repr(buf[0])} at byte 0")
