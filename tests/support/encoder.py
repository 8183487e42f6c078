"""A pgoutput encoder for tests: synthetic frames, mirroring the server's writers
(``logicalrep_write_*`` in PostgreSQL's proto.c). Each message's type byte comes from
the parser's own table, ``MESSAGE_TYPES``; tests/unit/test_protocol.py checks the
encoder itself against literal bytes, so parser and encoder cannot share a mistake.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Callable


from flash_wal.pgoutput import (
    MESSAGE_TYPES,
    Begin,
    BeginPrepare,
    BinaryValue,
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
from flash_wal.sentinels import UNCHANGED_TOAST


PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def ts(when: datetime) -> int:
    return (when - PG_EPOCH) // timedelta(microseconds=1)


def cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\0"


def u8(value: int) -> bytes:
    return struct.pack(">B", value)


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def i32(value: int) -> bytes:
    return struct.pack(">i", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def i64(value: int) -> bytes:
    return struct.pack(">q", value)


def opt_xid(xid: int | None) -> bytes:
    # The server writes the xid only inside a streamed block.
    return b"" if xid is None else u32(xid)


def tuple_data(values: tuple[Any, ...]) -> bytes:
    out = [u16(len(values))]
    for value in values:
        if value is None:
            out.append(b"n")
        elif value is UNCHANGED_TOAST:
            out.append(b"u")
        elif isinstance(value, BinaryValue):
            out.append(b"b" + i32(len(value.data)) + value.data)
        else:
            out.append(b"t" + i32(len(value)) + value)
    return b"".join(out)


#: Message class -> what follows its type byte.
ENCODERS: dict[type, Callable[[Any], bytes]] = {}


def encoder(cls: type) -> Callable[[Callable[[Any], bytes]], Callable[[Any], bytes]]:
    def register(func: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
        ENCODERS[cls] = func
        return func

    return register


#: Message class -> its type byte, from the table the parser reads by.
TYPE_BYTE: dict[type, bytes] = {kind.message: kind.code for kind in MESSAGE_TYPES}


def encode(msg: Any) -> bytes:
    return TYPE_BYTE[type(msg)] + ENCODERS[type(msg)](msg)


@encoder(Begin)
def _(m: Begin) -> bytes:
    return u64(m.final_lsn) + i64(ts(m.commit_time)) + u32(m.xid)


@encoder(Commit)
def _(m: Commit) -> bytes:
    return u8(m.flags) + u64(m.commit_lsn) + u64(m.end_lsn) + i64(ts(m.commit_time))


@encoder(Origin)
def _(m: Origin) -> bytes:
    return u64(m.origin_lsn) + cstr(m.name)


@encoder(Relation)
def _(m: Relation) -> bytes:
    out = [opt_xid(m.xid), u32(m.relid), cstr(m.namespace), cstr(m.name)]
    out.append(m.replica_identity.encode("ascii") + u16(len(m.columns)))
    for col in m.columns:
        out.append(
            u8(int(col.is_key)) + cstr(col.name) + u32(col.type_oid) + i32(col.type_modifier)
        )
    return b"".join(out)


@encoder(Type)
def _(m: Type) -> bytes:
    return opt_xid(m.xid) + u32(m.type_oid) + cstr(m.namespace) + cstr(m.name)


@encoder(Insert)
def _(m: Insert) -> bytes:
    return opt_xid(m.xid) + u32(m.relid) + b"N" + tuple_data(m.new)


@encoder(Update)
def _(m: Update) -> bytes:
    old = b""
    if m.old is not None:
        old = (b"K" if m.old_is_key else b"O") + tuple_data(m.old)
    return opt_xid(m.xid) + u32(m.relid) + old + b"N" + tuple_data(m.new)


@encoder(Delete)
def _(m: Delete) -> bytes:
    kind = b"K" if m.old_is_key else b"O"
    return opt_xid(m.xid) + u32(m.relid) + kind + tuple_data(m.old)


@encoder(Truncate)
def _(m: Truncate) -> bytes:
    flags = (1 if m.cascade else 0) | (2 if m.restart_identity else 0)
    relids = b"".join(u32(r) for r in m.relids)
    return opt_xid(m.xid) + u32(len(m.relids)) + u8(flags) + relids


@encoder(Message)
def _(m: Message) -> bytes:
    return (
        opt_xid(m.xid)
        + u8(1 if m.transactional else 0)
        + u64(m.lsn)
        + cstr(m.prefix)
        + i32(len(m.content))
        + m.content
    )


@encoder(StreamStart)
def _(m: StreamStart) -> bytes:
    return u32(m.xid) + u8(1 if m.first_segment else 0)


@encoder(StreamStop)
def _(m: StreamStop) -> bytes:
    return b""


@encoder(StreamCommit)
def _(m: StreamCommit) -> bytes:
    return (
        u32(m.xid)
        + u8(m.flags)
        + u64(m.commit_lsn)
        + u64(m.end_lsn)
        + i64(ts(m.commit_time))
    )


@encoder(StreamAbort)
def _(m: StreamAbort) -> bytes:
    out = u32(m.xid) + u32(m.subxid)
    if m.abort_lsn is not None:
        out += u64(m.abort_lsn) + i64(ts(m.abort_time))
    return out


@encoder(BeginPrepare)
def _(m: BeginPrepare) -> bytes:
    return (
        u64(m.prepare_lsn)
        + u64(m.end_lsn)
        + i64(ts(m.prepare_time))
        + u32(m.xid)
        + cstr(m.gid)
    )


def _prepare_like(m: Any) -> bytes:
    return (
        u8(m.flags)
        + u64(m.prepare_lsn)
        + u64(m.end_lsn)
        + i64(ts(m.prepare_time))
        + u32(m.xid)
        + cstr(m.gid)
    )


@encoder(Prepare)
def _(m: Prepare) -> bytes:
    return _prepare_like(m)


@encoder(StreamPrepare)
def _(m: StreamPrepare) -> bytes:
    return _prepare_like(m)


@encoder(CommitPrepared)
def _(m: CommitPrepared) -> bytes:
    return (
        u8(m.flags)
        + u64(m.commit_lsn)
        + u64(m.end_lsn)
        + i64(ts(m.commit_time))
        + u32(m.xid)
        + cstr(m.gid)
    )


@encoder(RollbackPrepared)
def _(m: RollbackPrepared) -> bytes:
    return (
        u8(m.flags)
        + u64(m.prepare_end_lsn)
        + u64(m.rollback_end_lsn)
        + i64(ts(m.prepare_time))
        + i64(ts(m.rollback_time))
        + u32(m.xid)
        + cstr(m.gid)
    )


