"""Each hot function gives what its plain twin gives, for any input (hypothesis, no server).

The replication thread runs three functions per change that are written for speed:
reading a tuple (``fields.read_tuple``), decoding a row (``RowDecoder.decode``) and
building an event (``events.build_insert``, ``build_update``, ``build_delete``). Each has
a twin written the obvious way next to it; these properties hold the fast one to it.
docs/performance.rst says what each fast one saves.
"""

import datetime
import decimal

import attr
import psycopg2.extensions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flash_wal.decoding import RowDecoder
from flash_wal.errors import ProtocolError
from flash_wal.events import (
    build_delete,
    build_delete_plain,
    build_insert,
    build_insert_plain,
    build_update,
    build_update_plain,
)
from flash_wal.pgoutput import BinaryValue, Column, Relation
from flash_wal.pgoutput.fields import Malformed, read_tuple, read_tuple_plain
from flash_wal.sentinels import UNCHANGED_TOAST

from tests.support.encoder import tuple_data


def check(max_examples):
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def outcome(read, buf, off):
    """What ``read`` makes of ``buf`` at ``off``: its result, or the error it raised."""
    try:
        return read(buf, off)
    except Malformed as exc:
        return ("Malformed", exc.offset, exc.reason)


def typed(value):
    """A value with the type of everything inside it, so that b"1" != BinaryValue(b"1")
    and UNCHANGED_TOAST is told from None; repr also makes NaN equal to itself."""
    if isinstance(value, dict):
        return [(key, typed(item)) for key, item in value.items()]
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(item) for item in value])
    return (type(value).__name__, repr(value))


# --- reading a tuple ----------------------------------------------------------------------

COLUMN_VALUE = st.one_of(
    st.none(),
    st.just(UNCHANGED_TOAST),
    st.binary(max_size=20),
    st.binary(max_size=20).map(BinaryValue),
)
TUPLE = st.lists(COLUMN_VALUE, max_size=12).map(tuple)


@check(500)
@given(values=TUPLE, before=st.binary(max_size=6), after=st.binary(max_size=6))
def test_a_valid_tuple_reads_the_same(values, before, after):
    buf = before + tuple_data(values) + after
    fast, plain = read_tuple(buf, len(before)), read_tuple_plain(buf, len(before))
    assert typed(fast) == typed(plain)
    assert typed(fast[0]) == typed(values)


@st.composite
def damaged_tuples(draw):
    """A valid tuple cut, extended or with bytes overwritten, or bytes at random."""
    buf = bytearray(tuple_data(draw(TUPLE)))
    for _ in range(draw(st.integers(0, 3))):
        if buf:
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        buf = buf[: draw(st.integers(0, len(buf)))]
    return bytes(buf) + draw(st.binary(max_size=4))


@check(1000)
@given(buf=st.one_of(damaged_tuples(), st.binary(max_size=40)), off=st.integers(0, 3))
def test_any_bytes_read_as_a_tuple_the_same_or_fail_the_same(buf, off):
    assert typed(outcome(read_tuple, buf, off)) == typed(outcome(read_tuple_plain, buf, off))


# --- decoding a row -----------------------------------------------------------------------

#: Casters psycopg2 runs without a connection (timestamptz and timetz need one, for the
#: cursor's tzinfo_factory), each with text the server could send for its type.
TEXT_BY_OID = {
    16: st.sampled_from([b"t", b"f"]),
    20: st.integers(-(2**63), 2**63 - 1).map(lambda n: str(n).encode()),
    21: st.integers(-(2**15), 2**15 - 1).map(lambda n: str(n).encode()),
    23: st.integers(-(2**31), 2**31 - 1).map(lambda n: str(n).encode()),
    25: st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20).map(str.encode),
    701: st.floats().map(lambda x: repr(x).replace("inf", "Infinity").encode()),
    1700: st.decimals(allow_infinity=False, places=4).map(lambda d: str(d).encode()),
    1007: st.lists(st.one_of(st.none(), st.integers(-100, 100)), max_size=4).map(
        lambda items: ("{" + ",".join("NULL" if i is None else str(i) for i in items) + "}").encode()
    ),
    114: st.sampled_from([b'{"a": [1, 2, null]}', b"[]", b'"x"', b"1.5"]),
    1082: st.dates().map(lambda d: d.isoformat().encode()),
    1114: st.datetimes().map(lambda d: d.isoformat(sep=" ").encode()),
}


class CursorlessCasters:
    """What RowDecoder takes from a TypeCasters, without a connection."""

    cursor = None

    def __init__(self):
        self.undecodable_columns = set()

    def caster(self, oid):
        return psycopg2.extensions.string_types[oid]


def decoder_for(oids):
    relation = Relation(None, 1, "public", "t", "f", tuple(
        Column(f"c{i}", oid, -1, i == 0) for i, oid in enumerate(oids)))
    return RowDecoder(relation, CursorlessCasters())


@st.composite
def rows(draw, clean):
    """A relation's column types and one tuple of it: only text the casters take and
    NULLs (``clean``, the fast path's case), or any column value, text that does not
    decode (``b"x"`` for an int, bytes that are not UTF-8) included."""
    oids = draw(st.lists(st.sampled_from(sorted(TEXT_BY_OID)), max_size=8))
    values = []
    for oid in oids:
        choices = [st.none(), TEXT_BY_OID[oid]]
        if not clean:
            choices += [st.just(UNCHANGED_TOAST), st.binary(max_size=6).map(BinaryValue), st.binary(max_size=6)]
        values.append(draw(st.one_of(choices)))
    return oids, values


@pytest.mark.parametrize("clean", [True, False], ids=["text and nulls", "any values"])
@check(500)
@given(data=st.data())
def test_a_row_decodes_the_same(clean, data):
    oids, values = data.draw(rows(clean))
    decoder = decoder_for(oids)
    assert typed(decoder.decode(values)) == typed(decoder.decode_plain(values))


def test_the_row_decoders_are_not_trivially_equal():
    # The properties above would hold for two functions that both returned {}.
    decoder = decoder_for([23, 25, 1700, 16])
    values = [b"7", b"caf\xc3\xa9", b"2.50", UNCHANGED_TOAST]
    expected = {"c0": 7, "c1": "café", "c2": decimal.Decimal("2.50"), "c3": UNCHANGED_TOAST}
    assert decoder.decode(values) == expected == decoder.decode_plain(values)
    assert decoder.decode([b"x", b"\xff", None, BinaryValue(b"\x01")]) == {
        "c0": "x", "c1": "\\xff", "c2": None, "c3": b"\x01"}


@pytest.mark.parametrize("method", ["decode", "decode_plain"])
@pytest.mark.parametrize("values", [[b"1"], [b"1", None, None], []])
def test_both_row_decoders_refuse_a_tuple_of_the_wrong_length(method, values):
    decode = getattr(decoder_for([23, 25]), method)
    with pytest.raises(ProtocolError, match=f"has 2 columns but the tuple has {len(values)}") as info:
        decode(values)
    assert info.value.__context__ is None  # no "during handling of the above exception"


def test_a_relation_without_columns_decodes_its_empty_tuples():
    decoder = decoder_for([])
    assert decoder.decode(()) == {} == decoder.decode_plain(())


@st.composite
def updates(draw, clean):
    """Column types, an old tuple and a new one where each column is the old one's
    text again or a value of its own (what REPLICA IDENTITY FULL sends)."""
    oids, old = draw(rows(clean))
    new = []
    for oid, value in zip(oids, old):
        choices = [st.just(value), st.none(), TEXT_BY_OID[oid]]
        if not clean:
            choices += [st.just(UNCHANGED_TOAST), st.binary(max_size=6)]
        new.append(draw(st.one_of(choices)))
    return oids, old, new


@pytest.mark.parametrize("clean", [True, False], ids=["text and nulls", "any values"])
@check(500)
@given(data=st.data())
def test_an_update_decodes_the_same(clean, data):
    oids, old, new = data.draw(updates(clean))
    decoder = decoder_for(oids)
    fast, plain = decoder.decode_update(old, new), decoder.decode_update_plain(old, new)
    assert typed(fast[0]) == typed(plain[0]) and typed(fast[1]) == typed(plain[1])


def test_an_update_shares_only_values_that_cannot_change_in_place():
    # int, text, int[], json: the same text in old and new.
    decoder = decoder_for([23, 25, 1007, 114])
    values = [b"7", b"same", b"{1,2}", b'{"a": 1}']
    old, new = decoder.decode_update(values, list(values))
    assert old == new == {"c0": 7, "c1": "same", "c2": [1, 2], "c3": {"a": 1}}
    assert old["c1"] is new["c1"]
    assert old["c2"] is not new["c2"] and old["c3"] is not new["c3"]
    # A TOASTed value left unchanged comes from the old row, as in the plain twin.
    old, new = decoder.decode_update(values, [b"8", UNCHANGED_TOAST, None, b"[]"])
    assert new == {"c0": 8, "c1": "same", "c2": None, "c3": []} and old["c0"] == 7


# --- building an event --------------------------------------------------------------------

ROW = st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=8)), max_size=4)
META = st.tuples(
    st.text(max_size=20),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.one_of(st.none(), st.datetimes(timezones=st.just(datetime.timezone.utc))),
)
KEY = st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=8)), max_size=3).map(tuple))
BUILDERS = {
    "insert": (build_insert, build_insert_plain, st.tuples(ROW, KEY)),
    "update": (build_update, build_update_plain, st.tuples(st.one_of(st.none(), ROW), ROW, KEY)),
    "delete": (build_delete, build_delete_plain, st.tuples(ROW, KEY)),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@check(300)
@given(data=st.data())
def test_a_built_event_is_the_constructed_one(kind, data):
    fast, plain, rows_strategy = BUILDERS[kind]
    args = data.draw(META) + data.draw(rows_strategy)
    built, constructed = fast(*args), plain(*args)
    assert type(built) is type(constructed)
    assert built.key == args[-1]
    assert built == constructed
    assert repr(built) == repr(constructed)
    assert attr.asdict(built) == attr.asdict(constructed)
    with pytest.raises(attr.exceptions.FrozenInstanceError):
        built.lsn = 0
