"""Unit tests for flash_wal.pgoutput: synthetic pgoutput frames, no database.

Frames are built by the encoder of tests/support/encoder.py, which mirrors the server's writers
(``logicalrep_write_*`` in PostgreSQL's proto.c). It takes each message's type byte from
the parser's own table, ``MESSAGE_TYPES``; a few literal byte strings, and the table
checked against the documented type bytes, check the encoder itself so that parser and
encoder cannot share a mistake unnoticed.
"""

from __future__ import annotations

import random
import re
import struct
from datetime import datetime, timedelta, timezone
from typing import Any

import attr
import pytest

from flash_wal.errors import ConfigurationError, ProtocolError
from flash_wal.pgoutput import (
    MESSAGE_TYPES,
    Begin,
    BeginPrepare,
    BinaryValue,
    Column,
    Commit,
    CommitPrepared,
    Delete,
    Insert,
    Message,
    Origin,
    PgOutputParser,
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

from tests.support.encoder import ENCODERS, PG_EPOCH, cstr, encode, i32, i64, ts, tuple_data, u16, u32, u64, u8

# ---------------------------------------------------------------------------- samples

T1 = datetime(2024, 5, 1, 12, 34, 56, 123456, tzinfo=timezone.utc)
T2 = datetime(2024, 5, 1, 12, 35, 0, 1, tzinfo=timezone.utc)
MAX_LSN = 2**64 - 1
MAX_XID = 2**32 - 1

COLUMNS = (
    Column("id", 20, -1, True),
    Column("name", 25, -1, False),
    Column("amount", 1700, 655366, False),
)

CHANGE_TYPES = (Relation, Type, Insert, Update, Delete, Truncate, Message)

SAMPLES: list[Any] = [
    Begin(0x16B3748, T1, 770),
    Begin(MAX_LSN, PG_EPOCH - timedelta(days=1), MAX_XID),
    Commit(0, 0x16B3748, 0x16B3778, T1),
    Origin(0x1234, "node_a"),
    Origin(0, ""),
    Relation(None, 16384, "public", "accounts", "d", COLUMNS),
    Relation(None, 1259, "", "pg_class", "n", (Column("relname", 19, -1, False),)),
    Relation(None, 2**32 - 2, "sch\u00e9ma", "t\u00e4ble", "f", ()),
    Relation(700, 16385, "public", "big", "i", COLUMNS[:1]),
    Type(None, 16500, "public", "mood"),
    Type(701, 16501, "", "int4"),
    Insert(None, 16384, (b"1", b"alice", b"12.50")),
    Insert(
        None, 16384, (b"", None, UNCHANGED_TOAST, BinaryValue(b"\x00\x01\xff"), BinaryValue(b""))
    ),
    Insert(None, 16384, ()),
    Insert(702, 16384, (b"1", None, None)),
    Update(None, 16384, None, False, (b"1", b"bob", b"1.00")),
    Update(None, 16384, (b"1", None, None), True, (b"2", b"bob", UNCHANGED_TOAST)),
    Update(None, 16384, (b"1", b"al", b"3"), False, (b"1", b"bob", b"3")),
    Update(703, 16384, (b"7", None, None), True, (b"8", None, None)),
    Delete(None, 16384, (b"1", None, None), True),
    Delete(None, 16384, (b"1", b"al", BinaryValue(b"\x01")), False),
    Delete(704, 16384, (b"1", None, None), True),
    Truncate(None, (16384,), False, False),
    Truncate(None, (16384, 16390, 2**32 - 1), True, True),
    Truncate(705, (16384,), False, True),
    Message(None, True, 0x100, "flash", b"payload\x00with\xffbytes"),
    Message(None, False, 0x200, "", b""),
    Message(706, True, 0x300, "p", b"x"),
    StreamStart(707, True),
    StreamStart(707, False),
    StreamStop(),
    StreamCommit(707, 0, 0x500, 0x530, T1),
    StreamAbort(707, 708),
    StreamAbort(707, 707, 0x600, T2),
    BeginPrepare(0x700, 0x730, T1, 709, "gid-1"),
    Prepare(0, 0x700, 0x730, T1, 709, "gid-1"),
    CommitPrepared(0, 0x800, 0x830, T2, 709, "gid-1"),
    RollbackPrepared(0, 0x730, 0x900, T1, T2, 709, "gid-\u00fc"),
    StreamPrepare(0, 0x700, 0x730, T1, 710, "gid-2"),
]


def needs_stream(msg: Any) -> bool:
    return isinstance(msg, StreamStop) or (isinstance(msg, CHANGE_TYPES) and msg.xid is not None)


def make_parser(msg: Any) -> PgOutputParser:
    """A protocol-4 parser in the state in which the server could send ``msg``."""
    parallel = isinstance(msg, StreamAbort) and msg.abort_lsn is not None
    parser = PgOutputParser(protocol_version=4, parallel_streaming=parallel)
    if needs_stream(msg):
        parser.parse(encode(StreamStart(getattr(msg, "xid", None) or 1, True)))
    return parser


def sample_id(msg: Any) -> str:
    return repr(msg)[:60]


def error_of(parser: PgOutputParser, payload: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parser.parse(payload)
    return info.value


# ----------------------------------------------------------------- encoder is sound


def test_encoder_matches_literal_frames() -> None:
    # Written out by hand from the message-format table.
    assert encode(Begin(0x0102030405060708, PG_EPOCH + timedelta(microseconds=5), 9)) == (
        b"B" + bytes(range(1, 9)) + b"\0" * 7 + b"\x05" + b"\0\0\0\x09"
    )
    assert encode(Insert(None, 0x4000, (b"ab", None))) == (
        b"I\x00\x00\x40\x00N\x00\x02t\x00\x00\x00\x02abn"
    )
    assert encode(Insert(7, 1, ())) == b"I\0\0\0\x07\0\0\0\x01N\0\0"


#: The type bytes as PostgreSQL's "Logical Replication Message Formats" lists them,
#: written out by hand: the encoder takes its bytes from the parser's table, so this is
#: what checks the table itself.
DOCUMENTED_TYPE_BYTES = {
    b"B": "Begin", b"M": "Message", b"C": "Commit", b"O": "Origin", b"R": "Relation",
    b"Y": "Type", b"I": "Insert", b"U": "Update", b"D": "Delete", b"T": "Truncate",
    b"S": "StreamStart", b"E": "StreamStop", b"c": "StreamCommit", b"A": "StreamAbort",
    b"b": "BeginPrepare", b"P": "Prepare", b"K": "CommitPrepared", b"r": "RollbackPrepared",
    b"p": "StreamPrepare",
}  # fmt: skip


def test_type_bytes_are_the_documented_ones() -> None:
    assert {kind.code: kind.message.__name__ for kind in MESSAGE_TYPES} == DOCUMENTED_TYPE_BYTES
    assert len(MESSAGE_TYPES) == len(DOCUMENTED_TYPE_BYTES)  # no type byte twice


def test_literal_insert_frame() -> None:
    frame = b"I\x00\x00\x40\x00N\x00\x04t\x00\x00\x00\x02abnub\x00\x00\x00\x01\xff"
    msg = PgOutputParser().parse(frame)
    assert msg == Insert(None, 0x4000, (b"ab", None, UNCHANGED_TOAST, BinaryValue(b"\xff")))


# -------------------------------------------------------------------------- round trip


def test_samples_cover_every_message_type() -> None:
    assert {type(m) for m in SAMPLES} == set(ENCODERS)
    assert len(ENCODERS) == 19


@pytest.mark.parametrize("msg", SAMPLES, ids=sample_id)
def test_round_trip(msg: Any) -> None:
    parsed = make_parser(msg).parse(encode(msg))
    assert type(parsed) is type(msg)
    assert parsed == msg


@pytest.mark.parametrize("msg", SAMPLES, ids=sample_id)
def test_messages_are_frozen_and_hashable(msg: Any) -> None:
    parsed = make_parser(msg).parse(encode(msg))
    hash(parsed)
    fields = attr.fields(type(parsed))
    if fields:
        with pytest.raises(attr.exceptions.FrozenInstanceError):
            setattr(parsed, fields[0].name, None)


def test_begin_fields() -> None:
    frame = b"B" + u64(0x16B3748) + i64(ts(T1)) + u32(770)
    msg = PgOutputParser().parse(frame)
    assert msg == Begin(final_lsn=0x16B3748, commit_time=T1, xid=770)


def test_commit_fields() -> None:
    frame = b"C" + u8(0) + u64(10) + u64(20) + i64(ts(T2))
    msg = PgOutputParser().parse(frame)
    assert (msg.flags, msg.commit_lsn, msg.end_lsn, msg.commit_time) == (0, 10, 20, T2)


@pytest.mark.parametrize(
    "micros, expected",
    [
        (0, PG_EPOCH),
        (1, PG_EPOCH + timedelta(microseconds=1)),
        (-1, PG_EPOCH - timedelta(microseconds=1)),
        (ts(T1), T1),
    ],
)
def test_timestamps_are_utc_aware(micros: int, expected: datetime) -> None:
    msg = PgOutputParser().parse(b"B" + u64(1) + i64(micros) + u32(1))
    assert msg.commit_time == expected
    assert msg.commit_time.tzinfo is timezone.utc


def test_relation_fields() -> None:
    msg = Relation(None, 16384, "", "pg_class", "d", COLUMNS)
    parsed = PgOutputParser().parse(encode(msg))
    assert parsed.namespace == ""  # kept as sent; "" means pg_catalog
    assert parsed.replica_identity == "d"
    assert parsed.columns == COLUMNS
    assert [c.is_key for c in parsed.columns] == [True, False, False]
    assert parsed.columns[2].type_modifier == 655366
    assert parsed.columns[0].type_modifier == -1


def test_relation_column_flags_other_bits_ignored() -> None:
    frame = b"R" + u32(1) + cstr("s") + cstr("t") + b"d" + u16(2)
    frame += u8(0x03) + cstr("a") + u32(23) + i32(-1)
    frame += u8(0x02) + cstr("b") + u32(23) + i32(-1)
    parsed = PgOutputParser().parse(frame)
    assert [c.is_key for c in parsed.columns] == [True, False]


@pytest.mark.parametrize("ident", ["d", "n", "f", "i"])
def test_relation_replica_identities(ident: str) -> None:
    msg = Relation(None, 1, "s", "t", ident, ())
    assert PgOutputParser().parse(encode(msg)).replica_identity == ident


@pytest.mark.parametrize(
    "flags, cascade, restart",
    [(0, False, False), (1, True, False), (2, False, True), (3, True, True)],
)
def test_truncate_flags(flags: int, cascade: bool, restart: bool) -> None:
    frame = b"T" + u32(2) + u8(flags) + u32(10) + u32(11)
    msg = PgOutputParser().parse(frame)
    assert msg == Truncate(None, (10, 11), cascade, restart)


@pytest.mark.parametrize("flags, transactional", [(0, False), (1, True)])
def test_message_flags(flags: int, transactional: bool) -> None:
    frame = b"M" + u8(flags) + u64(5) + cstr("pfx") + i32(3) + b"a\0b"
    msg = PgOutputParser().parse(frame)
    assert msg == Message(None, transactional, 5, "pfx", b"a\0b")
    assert type(msg.content) is bytes


def test_update_without_old_tuple() -> None:
    frame = b"U" + u32(5) + b"N" + tuple_data((b"1", b"x"))
    msg = PgOutputParser().parse(frame)
    assert msg.old is None
    assert msg.old_is_key is False
    assert msg.new == (b"1", b"x")


def test_update_with_old_key() -> None:
    frame = b"U" + u32(5) + b"K" + tuple_data((b"1", None)) + b"N" + tuple_data((b"2", b"x"))
    msg = PgOutputParser().parse(frame)
    assert msg.old == (b"1", None)
    assert msg.old_is_key is True
    assert msg.new == (b"2", b"x")


def test_update_with_old_row() -> None:
    frame = (
        b"U" + u32(5) + b"O" + tuple_data((b"1", b"y")) + b"N" + tuple_data((b"1", UNCHANGED_TOAST))
    )
    msg = PgOutputParser().parse(frame)
    assert msg.old == (b"1", b"y")
    assert msg.old_is_key is False
    assert msg.new[1] is UNCHANGED_TOAST


@pytest.mark.parametrize("marker, is_key", [(b"K", True), (b"O", False)])
def test_delete_old_tuple_kind(marker: bytes, is_key: bool) -> None:
    frame = b"D" + u32(5) + marker + tuple_data((b"1", None))
    msg = PgOutputParser().parse(frame)
    assert msg == Delete(None, 5, (b"1", None), is_key)


def test_every_tuple_kind() -> None:
    frame = b"I" + u32(1) + b"N" + u16(6)
    frame += (
        b"n"
        + b"u"
        + b"t"
        + i32(3)
        + b"abc"
        + b"t"
        + i32(0)
        + b"b"
        + i32(2)
        + b"\x00\x01"
        + b"b"
        + i32(0)
    )
    new = PgOutputParser().parse(frame).new
    assert type(new) is tuple
    assert new[0] is None
    assert new[1] is UNCHANGED_TOAST
    assert new[2] == b"abc" and type(new[2]) is bytes
    assert new[3] == b"" and type(new[3]) is bytes
    assert new[4] == BinaryValue(b"\x00\x01")
    assert type(new[4].data) is bytes
    assert new[5] == BinaryValue(b"")
    assert new[2] != BinaryValue(b"abc")


def test_text_value_is_not_decoded() -> None:
    raw = "caf\u00e9".encode("utf-8")
    frame = b"I" + u32(1) + b"N" + tuple_data((raw, b"\xff\xfe"))
    # Even bytes that are not UTF-8: the decoding layer, not the parser, interprets them.
    assert PgOutputParser().parse(frame).new == (raw, b"\xff\xfe")


def test_binary_value_repr_and_equality() -> None:
    assert repr(BinaryValue(b"\x01")) == "BinaryValue(b'\\x01')"
    assert BinaryValue(b"a") == BinaryValue(b"a")
    assert hash(BinaryValue(b"a")) == hash(BinaryValue(b"a"))
    assert BinaryValue(b"a") != b"a"


# --------------------------------------------------------------------------- streaming


def test_xid_only_inside_stream_block() -> None:
    parser = PgOutputParser(protocol_version=2)
    outside = Insert(None, 16384, (b"1",))
    assert parser.parse(encode(outside)) == outside
    assert not parser.in_stream

    assert parser.parse(encode(StreamStart(900, True))) == StreamStart(900, True)
    assert parser.in_stream
    inside = Insert(900, 16384, (b"1",))
    assert parser.parse(encode(inside)) == inside
    # The same bytes as an unstreamed Insert would be misread inside a block.
    with pytest.raises(ProtocolError):
        parser.parse(encode(outside))
    assert parser.in_stream

    assert parser.parse(b"E") == StreamStop()
    assert not parser.in_stream
    assert parser.parse(encode(outside)) == outside
    assert parser.parse(encode(StreamCommit(900, 0, 1, 2, T1))) == StreamCommit(900, 0, 1, 2, T1)


@pytest.mark.parametrize(
    "msg",
    [m for m in SAMPLES if isinstance(m, CHANGE_TYPES) and m.xid is None],
    ids=sample_id,
)
def test_every_change_type_reads_xid_inside_stream(msg: Any) -> None:
    streamed = attr.evolve(msg, xid=4242)
    parser = PgOutputParser(protocol_version=2)
    parser.parse(encode(StreamStart(4242, False)))
    assert parser.parse(encode(streamed)) == streamed
    assert parser.parse(b"E") == StreamStop()
    assert parser.parse(encode(msg)) == msg


def test_origin_inside_stream_has_no_xid() -> None:
    parser = PgOutputParser(protocol_version=2)
    parser.parse(encode(StreamStart(1, True)))
    assert parser.parse(encode(Origin(5, "up"))) == Origin(5, "up")
    assert parser.in_stream


@pytest.mark.parametrize(
    "msg",
    [
        Begin(1, T1, 2),
        Commit(0, 1, 2, T1),
        StreamStart(3, False),
        StreamCommit(3, 0, 1, 2, T1),
        StreamAbort(3, 3),
        BeginPrepare(1, 2, T1, 3, "g"),
        Prepare(0, 1, 2, T1, 3, "g"),
        CommitPrepared(0, 1, 2, T1, 3, "g"),
        RollbackPrepared(0, 1, 2, T1, T2, 3, "g"),
        StreamPrepare(0, 1, 2, T1, 3, "g"),
    ],
    ids=sample_id,
)
def test_transaction_control_rejected_inside_stream(msg: Any) -> None:
    parser = PgOutputParser(protocol_version=4)
    parser.parse(encode(StreamStart(3, True)))
    err = error_of(parser, encode(msg))
    assert type(msg).__name__ in str(err)
    assert "inside a streamed block" in str(err)
    assert parser.in_stream


def test_stream_stop_outside_stream_rejected() -> None:
    parser = PgOutputParser(protocol_version=2)
    err = error_of(parser, b"E")
    assert "StreamStop" in str(err) and "outside a streamed block" in str(err)
    assert not parser.in_stream


def test_reset_leaves_stream_block() -> None:
    parser = PgOutputParser(protocol_version=2)
    parser.parse(encode(StreamStart(1, True)))
    parser.reset()
    assert not parser.in_stream
    assert parser.parse(encode(Begin(1, T1, 2))) == Begin(1, T1, 2)


def test_failed_stream_start_keeps_state() -> None:
    parser = PgOutputParser(protocol_version=2)
    with pytest.raises(ProtocolError):
        parser.parse(encode(StreamStart(1, True)) + b"\0")
    assert not parser.in_stream
    parser.parse(encode(StreamStart(1, True)))
    with pytest.raises(ProtocolError):
        parser.parse(b"E\0")
    assert parser.in_stream


def test_stream_start_first_segment_flag() -> None:
    parser = PgOutputParser(protocol_version=2)
    assert parser.parse(b"S" + u32(5) + u8(1)).first_segment is True
    parser.reset()
    assert parser.parse(b"S" + u32(5) + u8(0)).first_segment is False


def test_stream_abort_without_parallel_fields() -> None:
    parser = PgOutputParser(protocol_version=4)
    msg = parser.parse(b"A" + u32(10) + u32(11))
    assert msg == StreamAbort(10, 11, None, None)
    err = error_of(parser, b"A" + u32(10) + u32(11) + u64(1) + i64(0))
    assert "trailing" in str(err)


def test_stream_abort_with_parallel_fields() -> None:
    parser = PgOutputParser(protocol_version=4, parallel_streaming=True)
    msg = parser.parse(b"A" + u32(10) + u32(11) + u64(0x99) + i64(ts(T2)))
    assert msg == StreamAbort(10, 11, 0x99, T2)
    assert msg.abort_time.tzinfo is timezone.utc
    with pytest.raises(ProtocolError, match="StreamAbort"):
        parser.parse(b"A" + u32(10) + u32(11))


# ---------------------------------------------------------------- protocol versions


@pytest.mark.parametrize(
    "version, rejected",
    [
        (1, [StreamStart(1, True), StreamCommit(1, 0, 1, 2, T1), StreamAbort(1, 1), StreamStop()]),
        (1, [BeginPrepare(1, 2, T1, 3, "g"), Prepare(0, 1, 2, T1, 3, "g")]),
        (2, [BeginPrepare(1, 2, T1, 3, "g"), CommitPrepared(0, 1, 2, T1, 3, "g")]),
        (2, [RollbackPrepared(0, 1, 2, T1, T2, 3, "g"), StreamPrepare(0, 1, 2, T1, 3, "g")]),
    ],
)
def test_messages_newer_than_protocol_version_rejected(version: int, rejected: list[Any]) -> None:
    parser = PgOutputParser(protocol_version=version)
    for msg in rejected:
        err = error_of(parser, encode(msg))
        assert type(msg).__name__ in str(err)
        assert f"protocol version {version}" in str(err)


def test_protocol_3_accepts_two_phase() -> None:
    parser = PgOutputParser(protocol_version=3)
    msg = BeginPrepare(1, 2, T1, 3, "g")
    assert parser.parse(encode(msg)) == msg


@pytest.mark.parametrize("version", [2, 3])
def test_parallel_streaming_needs_protocol_4(version: int) -> None:
    with pytest.raises(ConfigurationError, match="protocol_version 4"):
        PgOutputParser(protocol_version=version, parallel_streaming=True)


@pytest.mark.parametrize("version", [0, -1, "2", 2.0, None])
def test_invalid_protocol_version(version: Any) -> None:
    with pytest.raises(ConfigurationError):
        PgOutputParser(protocol_version=version)


def test_parser_attributes() -> None:
    parser = PgOutputParser(protocol_version=4, parallel_streaming=True)
    assert parser.protocol_version == 4
    assert parser.parallel_streaming is True
    assert PgOutputParser().protocol_version == 1


# ------------------------------------------------------------------- malformed input

OFFSET = re.compile(r"at byte (\d+)")


def offset_of(err: ProtocolError) -> int:
    match = OFFSET.search(str(err))
    assert match, str(err)
    return int(match.group(1))


@pytest.mark.parametrize("msg", SAMPLES, ids=sample_id)
def test_every_truncation_raises_protocol_error(msg: Any) -> None:
    frame = encode(msg)
    name = type(msg).__name__
    for i in range(len(frame)):
        parser = make_parser(msg)
        try:
            parser.parse(frame[:i])
        except ProtocolError as err:
            text = str(err)
            if i > 0:
                assert name in text, (i, text)
                assert 0 <= offset_of(err) <= i, (i, text)
        except Exception as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"payload[:{i}] raised {type(exc).__name__}: {exc}")
        else:  # pragma: no cover
            pytest.fail(f"payload[:{i}] of {name} parsed without error")


@pytest.mark.parametrize("msg", SAMPLES, ids=sample_id)
@pytest.mark.parametrize("extra", [b"\0", b"xyz"])
def test_trailing_bytes_raise_protocol_error(msg: Any, extra: bytes) -> None:
    frame = encode(msg)
    err = error_of(make_parser(msg), frame + extra)
    assert type(msg).__name__ in str(err)
    assert "trailing" in str(err)
    assert offset_of(err) == len(frame)


def test_empty_payload() -> None:
    with pytest.raises(ProtocolError, match="empty"):
        PgOutputParser().parse(b"")


KNOWN_CODES = set(b"BCORYIUDTMSEcAbPKrp")


@pytest.mark.parametrize("code", sorted(set(range(256)) - KNOWN_CODES))
def test_unknown_type_byte(code: int) -> None:
    for parser in (PgOutputParser(4), PgOutputParser(1)):
        err = error_of(parser, bytes((code,)) + b"\0" * 30)
        assert "unknown" in str(err)
        assert offset_of(err) == 0
    streaming = PgOutputParser(4)
    streaming.parse(encode(StreamStart(1, True)))
    with pytest.raises(ProtocolError, match="unknown"):
        streaming.parse(bytes((code,)))


@pytest.mark.parametrize(
    "frame, name, offset",
    [
        # relation name: 1 type + 4 relid + "s\0" -> name starts at 7, bad byte at 8
        (b"R" + u32(1) + cstr("s") + b"a\xff\0" + b"d" + u16(0), "Relation", 8),
        (b"R" + u32(1) + b"\xc3\0" + cstr("t") + b"d" + u16(0), "Relation", 5),
        (
            b"R"
            + u32(1)
            + cstr("s")
            + cstr("t")
            + b"d"
            + u16(1)
            + u8(0)
            + b"\xe2\x82\0"
            + u32(23)
            + i32(-1),
            "Relation",
            13,
        ),
        (b"Y" + u32(16500) + cstr("public") + b"\x80\0", "Type", 12),
        (b"O" + u64(1) + b"\xfe\0", "Origin", 9),
        (b"M" + u8(1) + u64(1) + b"\xff\0" + i32(0), "Message", 10),
        (b"b" + u64(1) + u64(2) + i64(0) + u32(3) + b"g\xff\0", "BeginPrepare", 30),
        (b"P" + u8(0) + u64(1) + u64(2) + i64(0) + u32(3) + b"\xff\0", "Prepare", 30),
        (b"K" + u8(0) + u64(1) + u64(2) + i64(0) + u32(3) + b"\xff\0", "CommitPrepared", 30),
        (
            b"r" + u8(0) + u64(1) + u64(2) + i64(0) + i64(0) + u32(3) + b"\xff\0",
            "RollbackPrepared",
            38,
        ),
        (b"p" + u8(0) + u64(1) + u64(2) + i64(0) + u32(3) + b"\xff\0", "StreamPrepare", 30),
    ],
)
def test_invalid_utf8_in_names(frame: bytes, name: str, offset: int) -> None:
    err = error_of(PgOutputParser(4), frame)
    assert name in str(err)
    assert "UTF-8" in str(err)
    assert offset_of(err) == offset
    assert isinstance(err.__cause__, UnicodeDecodeError)


def insert_frame(tuple_bytes: bytes) -> bytes:
    return b"I" + u32(1) + b"N" + tuple_bytes


@pytest.mark.parametrize(
    "frame, name, offset, fragment",
    [
        # tuples
        (insert_frame(u16(1) + b"x"), "Insert", 8, "unknown kind"),
        (insert_frame(u16(2) + b"n" + b"?"), "Insert", 9, "unknown kind"),
        (insert_frame(u16(0xFFFF) + b"nnn"), "Insert", 6, "column count 65535"),
        (insert_frame(u16(3) + b"nn"), "Insert", 6, "column count 3"),
        (insert_frame(u16(1) + b"t" + i32(10) + b"abc"), "Insert", 8, "runs past the end"),
        (insert_frame(u16(1) + b"t" + i32(-1) + b"abc"), "Insert", 8, "runs past the end"),
        (insert_frame(u16(1) + b"b" + i32(4) + b"abc"), "Insert", 8, "runs past the end"),
        (insert_frame(u16(1) + b"b" + i32(-4) + b"abcd"), "Insert", 8, "runs past the end"),
        (
            insert_frame(u16(2) + b"t" + i32(1) + b"a" + b"t" + i32(2)),
            "Insert",
            14,
            "runs past the end",
        ),
        (
            insert_frame(u16(2) + b"t" + i32(1) + b"a" + b"t" + b"\0\0"),
            "Insert",
            14,
            "ends inside column 1",
        ),
        # tuple markers
        (b"I" + u32(1) + b"X" + tuple_data(()), "Insert", 5, "expected b'N'"),
        (b"U" + u32(1) + b"X" + tuple_data(()), "Update", 5, "expected b'K', b'O' or b'N'"),
        (
            b"U" + u32(1) + b"K" + tuple_data(()) + b"K" + tuple_data(()),
            "Update",
            8,
            "expected b'N'",
        ),
        (b"U" + u32(1) + b"O" + tuple_data(()), "Update", 8, "new tuple marker"),
        (b"D" + u32(1) + b"N" + tuple_data(()), "Delete", 5, "expected b'K' or b'O'"),
        (b"D" + u32(1) + b"K" + u16(1) + b"z", "Delete", 8, "unknown kind"),
        # relation
        (b"R" + u32(1) + cstr("s") + cstr("t") + b"x" + u16(0), "Relation", 9, "replica identity"),
        (
            b"R" + u32(1) + cstr("s") + cstr("t") + b"d" + u16(2) + b"\0" * 19,
            "Relation",
            10,
            "column count 2",
        ),
        (b"R" + u32(1) + cstr("s") + b"no-terminator", "Relation", 7, "no terminating NUL"),
        # truncate
        (b"T" + u32(3) + u8(0) + u32(1) + u32(2), "Truncate", 1, "3 relation ids"),
        (b"T" + u32(1) + u8(0) + u32(1) + u32(2), "Truncate", 10, "trailing"),
        (b"T" + u32(0xFFFFFFFF) + u8(0) + u32(1), "Truncate", 1, "relation ids"),
        # message
        (b"M" + u8(1) + u64(1) + cstr("p") + i32(-1), "Message", 12, "content length -1"),
        (b"M" + u8(1) + u64(1) + cstr("p") + i32(5) + b"abc", "Message", 12, "content length 5"),
        (
            b"M" + u8(1) + u64(1) + cstr("p") + i32(1) + b"abc",
            "Message",
            17,
            "2 unexpected trailing",
        ),
        # timestamps beyond what datetime can hold
        (b"B" + u64(1) + i64(2**63 - 1) + u32(1), "Begin", 9, "out of range"),
        (b"C" + u8(0) + u64(1) + u64(2) + i64(-(2**63)), "Commit", 18, "out of range"),
        (
            b"b" + u64(1) + u64(2) + i64(2**63 - 1) + u32(3) + cstr("g"),
            "BeginPrepare",
            17,
            "out of range",
        ),
        (
            b"r" + u8(0) + u64(1) + u64(2) + i64(0) + i64(2**63 - 1) + u32(3) + cstr("g"),
            "RollbackPrepared",
            26,
            "out of range",
        ),
    ],
)
def test_malformed_frames(frame: bytes, name: str, offset: int, fragment: str) -> None:
    err = error_of(PgOutputParser(4), frame)
    text = str(err)
    assert name in text, text
    assert fragment in text, text
    assert offset_of(err) == offset, text


def test_out_of_range_timestamps_in_streaming_messages() -> None:
    parser = PgOutputParser(4, parallel_streaming=True)
    err = error_of(parser, b"c" + u32(1) + u8(0) + u64(1) + u64(2) + i64(2**63 - 1))
    assert offset_of(err) == 22 and isinstance(err.__cause__, OverflowError)
    err = error_of(parser, b"A" + u32(1) + u32(1) + u64(1) + i64(2**63 - 1))
    assert offset_of(err) == 17 and isinstance(err.__cause__, OverflowError)


def test_low_level_errors_are_chained() -> None:
    parser = PgOutputParser()
    err = error_of(parser, b"B" + u64(1))
    assert isinstance(err.__cause__, struct.error)
    err = error_of(parser, b"O" + u64(1) + b"abc")
    assert isinstance(err.__cause__, ValueError)
    err = error_of(parser, insert_frame(u16(2) + b"n"))
    assert err.__cause__ is None or isinstance(err.__cause__, (IndexError, struct.error))
    err = error_of(parser, insert_frame(u16(2) + b"t" + i32(0) + b"t" + b"\0"))
    assert isinstance(err.__cause__, struct.error)


def test_error_does_not_expose_internal_exception() -> None:
    err = error_of(PgOutputParser(), b"I" + u32(1) + b"X" + tuple_data(()))
    assert err.__cause__ is None
    assert err.__suppress_context__


@pytest.mark.parametrize("seed", range(4))
def test_random_corruption_only_raises_protocol_error(seed: int) -> None:
    rng = random.Random(seed)
    frames = [(msg, encode(msg)) for msg in SAMPLES]
    for _ in range(2500):
        msg, frame = rng.choice(frames)
        data = bytearray(frame)
        for _ in range(rng.randint(1, 3)):
            choice = rng.random()
            pos = rng.randrange(len(data) + 1)
            if choice < 0.5 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif choice < 0.75:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            else:
                del data[pos : pos + rng.randint(1, 4)]
        parser = make_parser(msg)
        try:
            parser.parse(bytes(data))
        except ProtocolError:
            pass
        except Exception as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{bytes(data)!r} raised {type(exc).__name__}: {exc}")
