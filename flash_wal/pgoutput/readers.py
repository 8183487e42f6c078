"""One reader per pgoutput message type: bytes in, one message object out.

Readers are plain functions of the payload (type byte included, at offset 0) that know
nothing of the parser's state; :data:`~flash_wal.pgoutput.parser.MESSAGE_TYPES` says
which reader a type byte calls and where that message may come. The change readers
(Relation to Message) also take the offset at which their fields start and the xid,
because inside a streamed block the server writes an xid first.

Every reader checks the frame's exact length, so a stream that got out of step is
reported instead of silently misread; failures raise
:class:`~flash_wal.pgoutput.fields.Malformed` with the byte offset.
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Optional

from .fields import (
    U8,
    U32,
    I32,
    U64,
    Malformed,
    byte_repr,
    check_end,
    read_fixed,
    read_string,
    read_tuple,
    timestamp,
    trailing,
    truncated,
)
from .messages import (
    Begin,
    BeginPrepare,
    Column,
    Commit,
    CommitPrepared,
    Delete,
    Insert,
    Message,
    Origin,
    Prepare,
    Relation,
    RollbackPrepared,
    StreamAbort,
    StreamCommit,
    StreamPrepare,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
)

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

_REPLICA_IDENTITIES = frozenset(b"dnfi")
# A Relation column takes at least ten bytes (flags, an empty name's NUL, type OID,
# typmod). Counts are checked against the bytes left up front, so a corrupt count fails
# at once with a clear message.
_MIN_RELATION_COLUMN_SIZE = 10

_RELID_ACTION_WHAT = "the relation id and tuple marker"
_NEW = ord("N")
_OLD_KEY = ord("K")
_OLD_ROW = ord("O")

_STREAM_STOP = StreamStop()


def read_xid(buf: bytes) -> int:
    """The xid that starts a change message inside a streamed block."""
    try:
        xid: int = U32.unpack_from(buf, 1)[0]
    except struct.error as exc:
        raise truncated(buf, 1, "the transaction id") from exc
    return xid


# -- transaction control


def read_begin(buf: bytes) -> Begin:
    final_lsn, micros, xid = read_fixed(buf, 1, _BEGIN, "the Begin fields")
    check_end(buf, 1 + _BEGIN.size)
    return Begin(final_lsn, timestamp(micros, 9), xid)


def read_commit(buf: bytes) -> Commit:
    flags, commit_lsn, end_lsn, micros = read_fixed(buf, 1, _COMMIT, "the Commit fields")
    check_end(buf, 1 + _COMMIT.size)
    return Commit(flags, commit_lsn, end_lsn, timestamp(micros, 18))


def read_origin(buf: bytes) -> Origin:
    (origin_lsn,) = read_fixed(buf, 1, U64, "the origin LSN")
    name, off = read_string(buf, 9, "origin name")
    check_end(buf, off)
    return Origin(origin_lsn, name)


# -- schema


def read_relation(buf: bytes, off: int = 1, xid: Optional[int] = None) -> Relation:
    (relid,) = read_fixed(buf, off, U32, "the relation id")
    namespace, off = read_string(buf, off + 4, "namespace")
    name, off = read_string(buf, off, "relation name")
    replica_identity, ncols = read_fixed(
        buf, off, _RELATION_TAIL, "the replica identity and column count"
    )
    if replica_identity not in _REPLICA_IDENTITIES:
        raise Malformed(off, f"unknown replica identity {byte_repr(replica_identity)}")
    off += 3
    if ncols * _MIN_RELATION_COLUMN_SIZE > len(buf) - off:
        raise Malformed(
            off - 2, f"column count {ncols} is impossible with {len(buf) - off} bytes left"
        )
    columns = []
    for i in range(ncols):
        (flags,) = read_fixed(buf, off, U8, f"column {i}")
        column_name, off = read_string(buf, off + 1, f"column {i} name")
        type_oid, type_modifier = read_fixed(buf, off, _COLUMN_TYPE, f"column {i} type")
        off += 8
        columns.append(Column(column_name, type_oid, type_modifier, bool(flags & 1)))
    check_end(buf, off)
    return Relation(xid, relid, namespace, name, chr(replica_identity), tuple(columns))


def read_type(buf: bytes, off: int = 1, xid: Optional[int] = None) -> Type:
    (type_oid,) = read_fixed(buf, off, U32, "the type OID")
    namespace, off = read_string(buf, off + 4, "namespace")
    name, off = read_string(buf, off, "type name")
    check_end(buf, off)
    return Type(xid, type_oid, namespace, name)


# -- changes


def read_insert(buf: bytes, off: int = 1, xid: Optional[int] = None) -> Insert:
    # The hot path: helpers are inlined here on purpose.
    try:
        relid, action = _RELID_ACTION.unpack_from(buf, off)
    except struct.error as exc:
        raise truncated(buf, off, _RELID_ACTION_WHAT) from exc
    if action != _NEW:
        raise Malformed(off + 4, f"expected b'N', got {byte_repr(action)}")
    new, off = read_tuple(buf, off + 5)
    if off != len(buf):
        raise trailing(buf, off)
    return Insert(xid, relid, new)


def read_update(buf: bytes, off: int = 1, xid: Optional[int] = None) -> Update:
    relid, action = read_fixed(buf, off, _RELID_ACTION, _RELID_ACTION_WHAT)
    off += 5
    old = None
    old_is_key = False
    if action == _OLD_KEY or action == _OLD_ROW:
        old_is_key = action == _OLD_KEY
        old, off = read_tuple(buf, off)
        if off >= len(buf):
            raise truncated(buf, off, "the new tuple marker")
        action = buf[off]
        off += 1
        if action != _NEW:
            raise Malformed(off - 1, f"expected b'N', got {byte_repr(action)}")
    elif action != _NEW:
        raise Malformed(off - 1, f"expected b'K', b'O' or b'N', got {byte_repr(action)}")
    new, off = read_tuple(buf, off)
    check_end(buf, off)
    return Update(xid, relid, old, old_is_key, new)


def read_delete(buf: bytes, off: int = 1, xid: Optional[int] = None) -> Delete:
    relid, action = read_fixed(buf, off, _RELID_ACTION, _RELID_ACTION_WHAT)
    if action != _OLD_KEY and action != _OLD_ROW:
        raise Malformed(off + 4, f"expected b'K' or b'O', got {byte_repr(action)}")
    old, off = read_tuple(buf, off + 5)
    check_end(buf, off)
    return Delete(xid, relid, old, action == _OLD_KEY)


def read_truncate(buf: bytes, off: int = 1, xid: Optional[int] = None) -> Truncate:
    nrels, flags = read_fixed(buf, off, _TRUNCATE_HEAD, "the Truncate header")
    off += 5
    if nrels * 4 > len(buf) - off:
        raise Malformed(
            off - 5, f"{nrels} relation ids do not fit in the {len(buf) - off} bytes left"
        )
    relids = struct.unpack_from(f">{nrels}I", buf, off)
    check_end(buf, off + nrels * 4)
    return Truncate(xid, relids, bool(flags & 1), bool(flags & 2))


def read_message(buf: bytes, off: int = 1, xid: Optional[int] = None) -> Message:
    flags, lsn = read_fixed(buf, off, _MESSAGE_HEAD, "the Message header")
    prefix, off = read_string(buf, off + 9, "prefix")
    (size,) = read_fixed(buf, off, I32, "the content length")
    if size < 0 or off + 4 + size > len(buf):
        raise Malformed(
            off, f"content length {size} does not fit in the {len(buf) - off - 4} bytes left"
        )
    check_end(buf, off + 4 + size)
    return Message(xid, bool(flags & 1), lsn, prefix, buf[off + 4 : off + 4 + size])


# -- streaming of in-progress transactions (protocol 2+)


def read_stream_start(buf: bytes) -> StreamStart:
    xid, first_segment = read_fixed(buf, 1, _STREAM_START, "the Stream Start fields")
    check_end(buf, 1 + _STREAM_START.size)
    return StreamStart(xid, first_segment == 1)


def read_stream_stop(buf: bytes) -> StreamStop:
    check_end(buf, 1)
    return _STREAM_STOP


def read_stream_commit(buf: bytes) -> StreamCommit:
    xid, flags, commit_lsn, end_lsn, micros = read_fixed(
        buf, 1, _STREAM_COMMIT, "the Stream Commit fields"
    )
    check_end(buf, 1 + _STREAM_COMMIT.size)
    return StreamCommit(xid, flags, commit_lsn, end_lsn, timestamp(micros, 22))


def read_stream_abort(buf: bytes) -> StreamAbort:
    xid, subxid = read_fixed(buf, 1, _STREAM_ABORT, "the Stream Abort fields")
    check_end(buf, 1 + _STREAM_ABORT.size)
    return StreamAbort(xid, subxid)


def read_stream_abort_parallel(buf: bytes) -> StreamAbort:
    """Stream Abort under ``streaming 'parallel'`` (protocol 4), which adds two fields."""
    xid, subxid, abort_lsn, micros = read_fixed(
        buf, 1, _STREAM_ABORT_PARALLEL, "the Stream Abort fields"
    )
    check_end(buf, 1 + _STREAM_ABORT_PARALLEL.size)
    return StreamAbort(xid, subxid, abort_lsn, timestamp(micros, 17))


# -- two-phase commit (protocol 3+)


def read_begin_prepare(buf: bytes) -> BeginPrepare:
    prepare_lsn, end_lsn, micros, xid = read_fixed(
        buf, 1, _BEGIN_PREPARE, "the Begin Prepare fields"
    )
    gid, off = read_string(buf, 1 + _BEGIN_PREPARE.size, "gid")
    check_end(buf, off)
    return BeginPrepare(prepare_lsn, end_lsn, timestamp(micros, 17), xid, gid)


def read_prepare(buf: bytes) -> Prepare:
    return Prepare(*_read_prepare_fields(buf))


def read_stream_prepare(buf: bytes) -> StreamPrepare:
    return StreamPrepare(*_read_prepare_fields(buf))


def _read_prepare_fields(buf: bytes) -> tuple[int, int, int, datetime, int, str]:
    flags, prepare_lsn, end_lsn, micros, xid = read_fixed(buf, 1, _PREPARE, "the Prepare fields")
    gid, off = read_string(buf, 1 + _PREPARE.size, "gid")
    check_end(buf, off)
    return flags, prepare_lsn, end_lsn, timestamp(micros, 18), xid, gid


def read_commit_prepared(buf: bytes) -> CommitPrepared:
    flags, commit_lsn, end_lsn, micros, xid = read_fixed(
        buf, 1, _PREPARE, "the Commit Prepared fields"
    )
    gid, off = read_string(buf, 1 + _PREPARE.size, "gid")
    check_end(buf, off)
    return CommitPrepared(flags, commit_lsn, end_lsn, timestamp(micros, 18), xid, gid)


def read_rollback_prepared(buf: bytes) -> RollbackPrepared:
    flags, prepare_end_lsn, rollback_end_lsn, prepare_us, rollback_us, xid = read_fixed(
        buf, 1, _ROLLBACK_PREPARED, "the Rollback Prepared fields"
    )
    gid, off = read_string(buf, 1 + _ROLLBACK_PREPARED.size, "gid")
    check_end(buf, off)
    return RollbackPrepared(
        flags,
        prepare_end_lsn,
        rollback_end_lsn,
        timestamp(prepare_us, 18),
        timestamp(rollback_us, 26),
        xid,
        gid,
    )
