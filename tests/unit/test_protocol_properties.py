"""Property-based tests for flash_wal.pgoutput (hypothesis).

* Round trip: arbitrary valid messages of every type, at every protocol version that
  allows them, go through the encoder of tests/unit/test_protocol.py (which mirrors the
  server's writers) and must parse back equal, in the parser state in which the server
  sends them (inside a streamed block through ``parse`` after a Stream Start, and through
  ``parse_held``).
* Fuzz: frames captured from real servers, and encoded arbitrary messages, mutated at
  random; every cut and extension of a valid frame; random bytes after every type byte.
  ``parse`` (and ``parse_held``) returns a message or raises ProtocolError, nothing else,
  in every parser configuration; the error's offset lies inside the payload, a failed
  parse leaves the parser's state alone, and an accepted frame is exactly as long as its
  message re-encoded (nothing skipped or ignored).

Every property is derandomized so that CI sees the same examples on every run.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

import attr
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flash_wal.errors import ProtocolError
from flash_wal.pgoutput import (
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

from tests.support.encoder import encode, ENCODERS, i64, PG_EPOCH, ts, u32

MESSAGE_TYPES = (
    Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, Message,
    StreamStart, StreamStop, StreamCommit, StreamAbort,
    BeginPrepare, Prepare, CommitPrepared, RollbackPrepared, StreamPrepare,
)  # fmt: skip
TYPE_BYTES = b"BCORYIUDTMSEcAbPKrp"


def check(max_examples: int) -> settings:
    """Settings of every property: a fixed budget, no deadline, the same examples each run."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ------------------------------------------------------------------------- strategies

UINT8 = st.integers(0, 2**8 - 1)
UINT32 = st.integers(0, 2**32 - 1)
LSN = st.integers(0, 2**64 - 1)
XID = UINT32
OID = UINT32
TYPMOD = st.integers(-(2**31), 2**31 - 1)

UTC_MIN = datetime.min.replace(tzinfo=timezone.utc)
UTC_MAX = datetime.max.replace(tzinfo=timezone.utc)
MICROS_MIN, MICROS_MAX = ts(UTC_MIN), ts(UTC_MAX)


def from_micros(micros: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=micros)


#: Any instant datetime can hold, as the parser returns it (aware, UTC).
TIMESTAMP = st.one_of(
    st.datetimes(timezones=st.just(timezone.utc)),
    st.integers(MICROS_MIN, MICROS_MAX).map(from_micros),
)
#: What a NUL-terminated UTF-8 string can carry: any code point but NUL (and surrogates,
#: which UTF-8 cannot encode).
NAME = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40)


def many(element: st.SearchStrategy, min_size: int, max_size: int) -> st.SearchStrategy:
    """Long sequences made cheaply: a short drawn pattern repeated to a drawn length."""
    return st.builds(
        lambda pattern, n: tuple(itertools.islice(itertools.cycle(pattern), n)),
        st.lists(element, min_size=1, max_size=6),
        st.integers(min_size, max_size),
    )


def sequences(element: st.SearchStrategy, many_max: int) -> st.SearchStrategy:
    """Empty, short, and now and then very long sequences (up to the count's limit)."""
    return st.one_of(
        st.lists(element, max_size=12).map(tuple),
        many(element, 13, many_max),
    )


SMALL_BYTES = st.binary(max_size=16)
#: Large values without drawing every byte: a short pattern repeated, past 64 KiB at most.
BIG_BYTES = st.builds(
    lambda pattern, n: pattern * n, st.binary(min_size=1, max_size=3), st.integers(0, 40_000)
)
COLUMN_VALUE = st.one_of(
    st.none(),
    st.just(UNCHANGED_TOAST),
    SMALL_BYTES,
    SMALL_BYTES.map(BinaryValue),
    st.binary(max_size=300),
    BIG_BYTES,
    BIG_BYTES.map(BinaryValue),
)
#: TupleData: the column count is a UInt16, so up to 65535 columns.
SMALL_VALUE = st.one_of(
    st.none(), st.just(UNCHANGED_TOAST), SMALL_BYTES, SMALL_BYTES.map(BinaryValue)
)
TUPLE = st.one_of(
    st.lists(COLUMN_VALUE, max_size=12).map(tuple),
    many(SMALL_VALUE, 13, 2**16 - 1),
)
COLUMN = st.builds(Column, name=NAME, type_oid=OID, type_modifier=TYPMOD, is_key=st.booleans())
GID = NAME


def change_strategies(xid: st.SearchStrategy) -> dict[type, st.SearchStrategy]:
    """The messages that carry an xid only inside a streamed block."""
    return {
        Relation: st.builds(
            Relation,
            xid=xid,
            relid=OID,
            namespace=NAME,
            name=NAME,
            replica_identity=st.sampled_from("dnfi"),
            # Up to PostgreSQL's MaxTupleAttributeNumber; tuples go to the UInt16 limit.
            columns=sequences(COLUMN, 1664),
        ),
        Type: st.builds(Type, xid=xid, type_oid=OID, namespace=NAME, name=NAME),
        Insert: st.builds(Insert, xid=xid, relid=OID, new=TUPLE),
        Update: st.one_of(
            st.builds(
                Update, xid=xid, relid=OID, old=st.none(), old_is_key=st.just(False), new=TUPLE
            ),
            st.builds(
                Update, xid=xid, relid=OID, old=TUPLE, old_is_key=st.booleans(), new=TUPLE
            ),
        ),
        Delete: st.builds(Delete, xid=xid, relid=OID, old=TUPLE, old_is_key=st.booleans()),
        Truncate: st.builds(
            Truncate,
            xid=xid,
            relids=sequences(OID, 5000),
            cascade=st.booleans(),
            restart_identity=st.booleans(),
        ),
        Message: st.builds(
            Message,
            xid=xid,
            transactional=st.booleans(),
            lsn=LSN,
            prefix=NAME,
            content=st.one_of(st.binary(max_size=300), BIG_BYTES),
        ),
    }


@attr.s(frozen=True, auto_attribs=True, repr=False)
class Case:
    """A kind of message, the versions that allow it and where the server sends it."""

    name: str
    strategy: st.SearchStrategy
    versions: tuple[int, ...]
    inside: bool = False  # sent inside a streamed block
    parallel: Optional[bool] = None  # needs parallel_streaming on (True) or off (False)

    def __repr__(self) -> str:  # short, for hypothesis's reports
        return f"<case {self.name}>"


OUTSIDE_CHANGES = change_strategies(st.none())
INSIDE_CHANGES = change_strategies(XID)
V1, V2, V3 = (1, 2, 3, 4), (2, 3, 4), (3, 4)

CASES = [
    Case("Begin", st.builds(Begin, final_lsn=LSN, commit_time=TIMESTAMP, xid=XID), V1),
    Case(
        "Commit",
        st.builds(Commit, flags=UINT8, commit_lsn=LSN, end_lsn=LSN, commit_time=TIMESTAMP),
        V1,
    ),
    Case("Origin", st.builds(Origin, origin_lsn=LSN, name=NAME), V1),
    # pgoutput sends Origin right after Stream Start too, without an xid.
    Case("Origin-streamed", st.builds(Origin, origin_lsn=LSN, name=NAME), V2, inside=True),
    *(Case(cls.__name__, strategy, V1) for cls, strategy in OUTSIDE_CHANGES.items()),
    *(
        Case(f"{cls.__name__}-streamed", strategy, V2, inside=True)
        for cls, strategy in INSIDE_CHANGES.items()
    ),
    Case("StreamStart", st.builds(StreamStart, xid=XID, first_segment=st.booleans()), V2),
    Case("StreamStop", st.just(StreamStop()), V2, inside=True),
    Case(
        "StreamCommit",
        st.builds(
            StreamCommit, xid=XID, flags=UINT8, commit_lsn=LSN, end_lsn=LSN, commit_time=TIMESTAMP
        ),
        V2,
    ),
    Case("StreamAbort", st.builds(StreamAbort, xid=XID, subxid=XID), V2, parallel=False),
    Case(
        "StreamAbort-parallel",
        st.builds(StreamAbort, xid=XID, subxid=XID, abort_lsn=LSN, abort_time=TIMESTAMP),
        (4,),
        parallel=True,
    ),
    Case(
        "BeginPrepare",
        st.builds(
            BeginPrepare, prepare_lsn=LSN, end_lsn=LSN, prepare_time=TIMESTAMP, xid=XID, gid=GID
        ),
        V3,
    ),
    *(
        Case(
            cls.__name__,
            st.builds(
                cls,
                flags=UINT8,
                prepare_lsn=LSN,
                end_lsn=LSN,
                prepare_time=TIMESTAMP,
                xid=XID,
                gid=GID,
            ),
            V3,
        )
        for cls in (Prepare, StreamPrepare)
    ),
    Case(
        "CommitPrepared",
        st.builds(
            CommitPrepared,
            flags=UINT8,
            commit_lsn=LSN,
            end_lsn=LSN,
            commit_time=TIMESTAMP,
            xid=XID,
            gid=GID,
        ),
        V3,
    ),
    Case(
        "RollbackPrepared",
        st.builds(
            RollbackPrepared,
            flags=UINT8,
            prepare_end_lsn=LSN,
            rollback_end_lsn=LSN,
            prepare_time=TIMESTAMP,
            rollback_time=TIMESTAMP,
            xid=XID,
            gid=GID,
        ),
        V3,
    ),
]

#: Any valid message, for the fuzz over encoded frames: (case, message).
ANY_CASE_MESSAGE = st.one_of(
    *(st.tuples(st.just(case), case.strategy) for case in CASES)
)


#: One message of each type, to check the type bytes.
_SAMPLE_PER_TYPE = [
    Begin(1, PG_EPOCH, 1), Commit(0, 1, 2, PG_EPOCH), Origin(1, "o"),
    Relation(None, 1, "s", "t", "d", ()), Type(None, 1, "s", "t"), Insert(None, 1, ()),
    Update(None, 1, None, False, ()), Delete(None, 1, (), True), Truncate(None, (), False, False),
    Message(None, True, 1, "p", b""), StreamStart(1, True), StreamStop(),
    StreamCommit(1, 0, 1, 2, PG_EPOCH), StreamAbort(1, 1), BeginPrepare(1, 2, PG_EPOCH, 3, "g"),
    Prepare(0, 1, 2, PG_EPOCH, 3, "g"), CommitPrepared(0, 1, 2, PG_EPOCH, 3, "g"),
    RollbackPrepared(0, 1, 2, PG_EPOCH, PG_EPOCH, 3, "g"), StreamPrepare(0, 1, 2, PG_EPOCH, 3, "g"),
]  # fmt: skip


def test_cases_cover_every_message_type() -> None:
    assert set(MESSAGE_TYPES) == set(ENCODERS)
    assert {case.name.split("-")[0] for case in CASES} == {cls.__name__ for cls in MESSAGE_TYPES}
    assert {type(m) for m in _SAMPLE_PER_TYPE} == set(MESSAGE_TYPES)
    assert bytes(sorted(TYPE_BYTES)) == bytes(sorted({encode(m)[0] for m in _SAMPLE_PER_TYPE}))


# ------------------------------------------------------------------------- round trip


def assert_same(parsed: Any, expected: Any) -> None:
    """Equal, and of exactly the same types all the way down (bytes vs BinaryValue,
    UNCHANGED_TOAST by identity, tuples as tuples, datetimes in UTC)."""
    assert type(parsed) is type(expected), (parsed, expected)
    assert parsed == expected
    for field in attr.fields(type(expected)):
        got, want = getattr(parsed, field.name), getattr(expected, field.name)
        assert type(got) is type(want), (field.name, got, want)
        if isinstance(want, datetime):
            assert got.tzinfo is timezone.utc, (field.name, got)
        elif isinstance(want, tuple):
            for g, w in zip(got, want):
                assert type(g) is type(w), (field.name, g, w)
                if w is UNCHANGED_TOAST:
                    assert g is UNCHANGED_TOAST
                elif isinstance(w, BinaryValue):
                    assert type(g.data) is bytes


def versions_and_parallel(case: Case) -> st.SearchStrategy:
    """(protocol_version, parallel_streaming) pairs under which ``case`` is sent."""
    pairs = [(v, False) for v in case.versions] + ([(4, True)] if 4 in case.versions else [])
    if case.parallel is not None:
        pairs = [(v, p) for v, p in pairs if p == case.parallel]
    return st.sampled_from(pairs)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@check(max_examples=60)
@given(data=st.data())
def test_round_trip(case: Case, data: st.DataObject) -> None:
    msg = data.draw(case.strategy, label="message")
    version, parallel = data.draw(versions_and_parallel(case), label="version, parallel")
    frame = encode(msg)

    parser = PgOutputParser(version, parallel_streaming=parallel)
    if case.inside:
        block_xid = data.draw(XID, label="Stream Start xid")
        parser.parse(encode(StreamStart(block_xid, data.draw(st.booleans()))))
        assert parser.in_stream
    assert_same(parser.parse(frame), msg)
    # Only Stream Start and Stream Stop move the parser in or out of a block.
    in_block = isinstance(msg, StreamStart) or (case.inside and not isinstance(msg, StreamStop))
    assert parser.in_stream == in_block

    if case.inside and isinstance(msg, StreamStop):
        # It ends a block; it is never held, and parse_held refuses it.
        with pytest.raises(ProtocolError, match="Stream Stop"):
            PgOutputParser(version, parallel_streaming=parallel).parse_held(frame)
    elif case.inside:
        # Held for later and replayed outside any block, by a parser in either state.
        held_by = PgOutputParser(version, parallel_streaming=parallel)
        assert_same(held_by.parse_held(frame), msg)
        assert not held_by.in_stream
        held_by.parse(encode(StreamStart(1, False)))
        assert_same(held_by.parse_held(frame), msg)
        assert held_by.in_stream

    # The versions that do not allow the message reject it, naming it.
    for other in sorted({1, 2, 3, 4} - set(case.versions)):
        older = PgOutputParser(other)
        with pytest.raises(ProtocolError, match=type(msg).__name__):
            older.parse_held(frame) if case.inside else older.parse(frame)
    # A Stream Abort with or without the parallel fields is not read as the other kind.
    if isinstance(msg, StreamAbort):
        with pytest.raises(ProtocolError, match="StreamAbort"):
            PgOutputParser(4, parallel_streaming=not parallel).parse(frame)


@check(max_examples=300)
@given(micros=st.integers(-(2**63), 2**63 - 1), lsn=LSN, xid=XID)
def test_timestamps_over_the_whole_int64_range(micros: int, lsn: int, xid: int) -> None:
    """A timestamp datetime can hold comes out exactly; any other is a ProtocolError."""
    frame = b"B" + lsn.to_bytes(8, "big") + i64(micros) + u32(xid)
    if MICROS_MIN <= micros <= MICROS_MAX:
        msg = PgOutputParser().parse(frame)
        assert msg == Begin(lsn, from_micros(micros), xid)
        assert ts(msg.commit_time) == micros
    else:
        with pytest.raises(ProtocolError, match="out of range"):
            PgOutputParser().parse(frame)


# ------------------------------------------------------------------------------ fuzz

FRAME_FILES = sorted(pathlib.Path(__file__).parents[1].joinpath("support", "frames").glob("pg*.json"))


def load_captured() -> list[tuple[str, int, bytes]]:
    out = []
    for path in FRAME_FILES:
        capture = json.loads(path.read_text())
        for i, frame in enumerate(capture["frames"]):
            payload = bytes.fromhex(frame["payload"])
            out.append((f"{path.stem}#{i}", capture["protocol_version"], payload))
    return out


CAPTURED = load_captured()

#: Parser configurations: (protocol_version, parallel_streaming, inside a block, parse_held).
CONFIGS = [
    (version, parallel, inside, held)
    for version in (1, 2, 3, 4)
    for parallel in ((False, True) if version == 4 else (False,))
    for inside in ((False, True) if version >= 2 else (False,))
    for held in (False, True)
]
OFFSET = re.compile(r"at byte (\d+)")
#: Values at the edges of the signed and unsigned integer fields, for the "int" mutation.
INTERESTING = [
    0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**63 - 1, 2**63, 2**64 - 1,
]  # fmt: skip


def make(config: tuple[int, bool, bool, bool]) -> tuple[PgOutputParser, Callable[[bytes], Any]]:
    version, parallel, inside, held = config
    parser = PgOutputParser(version, parallel_streaming=parallel)
    if inside:
        parser.parse(b"S" + u32(7) + b"\x01")
    return parser, (parser.parse_held if held else parser.parse)


def parse_totally(config: tuple[int, bool, bool, bool], payload: bytes) -> Any:
    """Parse ``payload``; anything but a message or a ProtocolError fails the test.

    Also checked: a ProtocolError gives an offset inside the payload and leaves the
    parser's state alone; only a Stream Start or Stream Stop read by ``parse`` moves the
    parser (``parse_held``: see test_parse_held_leaves_the_parser_state_alone); an
    accepted message encodes back to a frame of the payload's length that parses to the
    same message. Returns the message or the ProtocolError.
    """
    parser, parse = make(config)
    before = parser.in_stream
    try:
        msg = parse(payload)
    except ProtocolError as err:
        text = str(err)
        if payload:
            match = OFFSET.search(text)
            assert match, text
            assert 0 <= int(match.group(1)) <= len(payload), (text, len(payload))
        assert parser.in_stream == before, text
        return err
    except Exception as exc:  # pragma: no cover - the failure being looked for
        pytest.fail(f"{config}: {payload[:200]!r} ({len(payload)} bytes) raised {exc!r}")
    assert isinstance(msg, MESSAGE_TYPES), msg
    if parse == parser.parse:
        if isinstance(msg, StreamStart):
            assert parser.in_stream
        elif isinstance(msg, StreamStop):
            assert not parser.in_stream
        else:
            assert parser.in_stream == before
    reencoded = encode(msg)
    # Equal up to flag bits the parser ignores, so of the same length: nothing was skipped.
    assert len(reencoded) == len(payload), (payload[:200], msg)
    assert_same(make(config)[1](reencoded), msg)
    return msg


MUTATIONS = ["flip", "byte", "int", "nudge", "insert", "delete", "truncate", "append"]


@st.composite
def mutated(draw: Callable, frame: bytes) -> bytes:
    """``frame`` with one to four random edits."""
    buf = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        n = len(buf)
        # Half the positions fall among the first bytes, where the headers and counts are.
        pos = draw(st.one_of(st.integers(0, min(n, 40)), st.integers(0, n)))
        op = draw(st.sampled_from(MUTATIONS))
        if op == "flip" and pos < n:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and pos < n:
            buf[pos] = draw(st.integers(0, 255))
        elif op == "int":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from(INTERESTING)) % 256**width
            buf[pos : pos + width] = value.to_bytes(width, "big")
        elif op == "nudge":  # a count or length a little off
            width = draw(st.sampled_from([1, 2, 4, 8]))
            if pos + width <= n:
                value = int.from_bytes(buf[pos : pos + width], "big") + draw(st.integers(-4, 4))
                buf[pos : pos + width] = (value % 256**width).to_bytes(width, "big")
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del buf[pos:]
        else:
            buf += draw(st.binary(min_size=1, max_size=16))
    return bytes(buf)


def config_for(version: int) -> st.SearchStrategy:
    """Mostly the capture's own configuration, sometimes any other."""
    own = [c for c in CONFIGS if c[0] == version and not c[1] and not c[2] and not c[3]]
    return st.one_of(st.sampled_from(own), st.sampled_from(CONFIGS))


def test_captured_frames_parse_unmutated() -> None:
    assert {name.split("#")[0] for name, _, _ in CAPTURED} >= {"pg15", "pg18"}
    for name, version, frame in CAPTURED:
        msg = parse_totally((version, False, False, False), frame)
        assert not isinstance(msg, ProtocolError), (name, msg)
        assert encode(msg) == frame, name  # the encoder writes what the server wrote


@check(max_examples=1200)
@given(data=st.data())
def test_mutated_captured_frames_raise_only_protocol_error(data: st.DataObject) -> None:
    name, version, frame = data.draw(st.sampled_from(CAPTURED), label="captured frame")
    payload = data.draw(mutated(frame), label="mutated")
    parse_totally(data.draw(config_for(version), label="config"), payload)


@check(max_examples=600)
@given(data=st.data())
def test_mutated_encoded_frames_raise_only_protocol_error(data: st.DataObject) -> None:
    """The same over every message type, the streaming and two-phase ones included."""
    case, msg = data.draw(ANY_CASE_MESSAGE, label="message")
    payload = data.draw(mutated(encode(msg)), label="mutated")
    parse_totally(data.draw(st.sampled_from(CONFIGS), label="config"), payload)


@check(max_examples=150)
@given(case_msg=ANY_CASE_MESSAGE, suffix=st.binary(min_size=1, max_size=8), held=st.booleans())
def test_truncated_or_extended_valid_frames_are_rejected(
    case_msg: tuple[Case, Any], suffix: bytes, held: bool
) -> None:
    """Every message is self-delimiting: no proper prefix of a frame, and no frame with
    bytes after it, is a message (every cut of a short frame; of a long one the first 48
    and the last few)."""
    case, msg = case_msg
    config = (4, bool(case.parallel), case.inside, held and case.inside)
    frame = encode(msg)
    tail = 48 if len(frame) < 4096 else 3  # a cut near the end of a long frame reads all of it
    cuts = set(range(min(len(frame), 48))) | set(range(max(len(frame) - tail, 0), len(frame)))
    for cut in sorted(cuts):
        assert isinstance(parse_totally(config, frame[:cut]), ProtocolError), cut
    assert isinstance(parse_totally(config, frame + suffix), ProtocolError)


@pytest.mark.parametrize("code", [bytes([c]) for c in TYPE_BYTES], ids=lambda c: c.decode())
@check(max_examples=100)
@given(tail=st.binary(max_size=80))
def test_random_bytes_after_each_type_byte(code: bytes, tail: bytes) -> None:
    for config in CONFIGS:
        parse_totally(config, code + tail)


@check(max_examples=100)
@given(payload=st.binary(max_size=40))
def test_random_bytes_with_any_first_byte(payload: bytes) -> None:
    for config in CONFIGS:
        parse_totally(config, payload)


HELD_CONFIGS = [config for config in CONFIGS if config[3]]


@check(max_examples=200)
@given(
    config=st.sampled_from(HELD_CONFIGS),
    payload=st.one_of(
        ANY_CASE_MESSAGE.map(lambda case_msg: encode(case_msg[1])), st.binary(max_size=40)
    ),
)
@example(config=(2, False, True, True), payload=b"E")  # a Stream Stop: never held, refused
def test_parse_held_leaves_the_parser_state_alone(config: tuple, payload: bytes) -> None:
    parser, parse_held = make(config)
    before = parser.in_stream
    try:
        parse_held(payload)
    except ProtocolError:
        pass
    assert parser.in_stream == before
