"""Every common type decodes, through the real server, to what psycopg2 gives for a SELECT."""

import datetime
import decimal
import uuid

import pytest
from psycopg2 import sql

from flash_wal import Operation

from tests.support.recorder import Recorder

COLUMNS = """
    id int PRIMARY KEY,
    i2 int2, i4 int4, i8 int8, num numeric(12, 4), num_big numeric, f4 float4, f8 float8,
    flag bool, txt text, vc varchar(20), ch char(3), raw bytea,
    d date, t time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    js json, jsb jsonb, u uuid,
    int_arr int[], text_arr text[], uuid_arr uuid[], bytea_arr bytea[], nested int[][],
    mood {enum}, moods {enum}[], pos {domain}, pos_arr {domain}[]
"""

VALUES = {
    "i2": -32768,
    "i4": 2147483647,
    "i8": -9223372036854775808,
    "num": decimal.Decimal("12345678.1234"),
    "num_big": decimal.Decimal("123456789012345678901234567890.000000001"),
    "f4": 1.5,
    "f8": 0.1,
    "flag": True,
    "txt": "héllo, wörld ✓ \"quoted\" 'single' \\ back",
    "vc": "short",
    "ch": "ab ",
    "raw": b"\x00\x01\xffbinary",
    "d": datetime.date(2024, 2, 29),
    "t": datetime.time(23, 59, 58, 123456),
    "ts": datetime.datetime(1999, 12, 31, 23, 59, 59, 999999),
    "tstz": datetime.datetime(2024, 6, 1, 12, 30, tzinfo=datetime.timezone.utc),
    "iv": datetime.timedelta(days=3, hours=4, minutes=5, seconds=6, microseconds=7),
    "js": {"a": [1, 2, {"b": None}], "c": "d"},
    "jsb": {"nested": {"list": [True, False]}, "n": 1.5},
    "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "int_arr": [1, None, 3],
    "text_arr": ["a", "b c", "", None, 'q"uote', "NULL"],
    "uuid_arr": [uuid.UUID(int=1), uuid.UUID(int=2)],
    "bytea_arr": [b"\x00", b"ab"],
    "nested": [[1, 2], [3, 4]],
    "mood": "happy",
    "moods": ["sad", "happy"],
    "pos": 42,
    "pos_arr": [1, 2],
}


@pytest.fixture
def typed_table(db, make_table, unique):
    enum, domain = f"{unique}_mood", f"{unique}_pos"
    db.execute(sql.SQL("CREATE TYPE {} AS ENUM ('sad', 'ok', 'happy')").format(sql.Identifier(enum)))
    db.execute(sql.SQL("CREATE DOMAIN {} AS int CHECK (VALUE > 0)").format(sql.Identifier(domain)))
    columns = COLUMNS.format(enum=sql.Identifier(enum).as_string(db.conn), domain=sql.Identifier(domain).as_string(db.conn))
    table = make_table(columns)
    yield table
    db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    db.execute(sql.SQL("DROP TYPE {}").format(sql.Identifier(enum)))
    db.execute(sql.SQL("DROP DOMAIN {}").format(sql.Identifier(domain)))


def test_every_common_type_decodes(make_client, typed_table, db):
    recorder = Recorder()
    client = make_client()
    client.on(typed_table, Operation.INSERT)(recorder)
    names = list(VALUES)
    insert = sql.SQL("INSERT INTO {} (id, ttz, {}) VALUES (1, '10:20:30+02', {})").format(
        sql.Identifier(typed_table),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    )
    from psycopg2.extras import Json

    literal = {"moods": "{sad,happy}"}  # a text[] parameter does not cast to an enum array
    params = [Json(v) if k in ("js", "jsb") else literal.get(k, v) for k, v in VALUES.items()]
    with client:
        db.execute(insert, params)
        row = recorder.wait(1)[0].new
    for name, expected in VALUES.items():
        assert row[name] == expected, name
        assert type(row[name]) is type(expected), name
    assert row["ttz"] == datetime.time(10, 20, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert row["tstz"].tzinfo is not None


def test_nulls_decode_to_none(make_client, typed_table, db):
    recorder = Recorder()
    client = make_client()
    client.on(typed_table, Operation.INSERT)(recorder)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (id) VALUES (7)").format(sql.Identifier(typed_table)))
        row = recorder.wait(1)[0].new
    assert row["id"] == 7
    assert all(value is None for name, value in row.items() if name != "id")


def test_special_float_and_numeric_values(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, f float8, n numeric")
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(recorder)
    with client:
        db.execute(sql.SQL(
            "INSERT INTO {} VALUES (1, 'NaN', 'NaN'), (2, 'Infinity', 1e-20), (3, 0.30000000000000004, -0.5)"
        ).format(sql.Identifier(table)))
        rows = [e.new for e in recorder.wait(3)]
    assert rows[0]["f"] != rows[0]["f"] and rows[0]["n"].is_nan()
    assert rows[1]["f"] == float("inf") and rows[1]["n"] == decimal.Decimal("1e-20")
    assert rows[2]["f"] == 0.30000000000000004  # extra_float_digits pinned: no precision lost
    assert rows[2]["n"] == decimal.Decimal("-0.5")


def test_formats_are_pinned_whatever_the_server_defaults(make_client, make_table, db, unique):
    """A role whose defaults would break the casters still decodes correctly."""
    role = f"{unique}_odd"
    db.execute(sql.SQL(
        "CREATE ROLE {} LOGIN REPLICATION SUPERUSER"
    ).format(sql.Identifier(role)))
    for setting, value in [("DateStyle", "SQL, DMY"), ("IntervalStyle", "iso_8601"),
                           ("extra_float_digits", "-3"), ("TimeZone", "America/New_York"),
                           ("bytea_output", "escape")]:
        db.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
            sql.Identifier(role), sql.Identifier(setting), sql.Literal(value)))
    table = make_table("id int PRIMARY KEY, d date, ts timestamptz, iv interval, f float8, b bytea")
    recorder = Recorder()
    from flash_wal import Client
    from flash_wal.drivers.wal_logical import Driver, DriverConfig

    dsn = db.dsn.replace("postgres@", f"{role}@", 1) if "postgres@" in db.dsn else db.dsn + f" user={role}"
    client = Client(database_cnx=dsn, driver=Driver(DriverConfig(
        publication_slot_prefix=f"p_{unique}", replication_slot=f"s_{unique}")))
    client.on(table, Operation.INSERT)(recorder)
    try:
        with client:
            db.execute(sql.SQL(
                "INSERT INTO {} VALUES (1, '2024-03-04', '2024-03-04 05:06:07+00', '1 day 02:03:04', 0.1, '\\x00ff')"
            ).format(sql.Identifier(table)))
            row = recorder.wait(1)[0].new
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert row["d"] == datetime.date(2024, 3, 4)
    assert row["ts"] == datetime.datetime(2024, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)
    assert row["iv"] == datetime.timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert row["f"] == 0.1
    assert row["b"] == b"\x00\xff"


def test_unknown_types_fall_back_to_text(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, p point, m money, c cidr, r int4range")
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(recorder)
    with client:
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, '(1,2)', 12.5, '10.0.0.0/8', '[1,5)')").format(
            sql.Identifier(table)))
        row = recorder.wait(1)[0].new
    assert row["p"] == "(1,2)"
    assert row["m"] == "$12.50"
    assert row["c"] == "10.0.0.0/8"
    assert row["r"] is not None  # psycopg2 has a range caster: its object, not a crash


def test_row_decoder_takes_unchanged_toast_and_binary_values_as_they_are(db):
    import psycopg2

    from flash_wal import UNCHANGED_TOAST
    from flash_wal.decoding import RowDecoder, TypeCasters
    from flash_wal.pgoutput import BinaryValue, Column, Relation

    conn = psycopg2.connect(db.dsn)
    try:
        relation = Relation(None, 1, "public", "t", "f", tuple(
            Column(name, oid, -1, False) for name, oid in (("a", 23), ("b", 25), ("c", 1700), ("d", 17))))
        decoder = RowDecoder(relation, TypeCasters(conn.cursor()))
        assert decoder.decode([b"1", None, b"2.5", b"\\x00ff"]) == {
            "a": 1, "b": None, "c": decimal.Decimal("2.5"), "d": b"\x00\xff"}
        mixed = decoder.decode([b"1", UNCHANGED_TOAST, BinaryValue(b"\x00\x01"), None])
        assert mixed == {"a": 1, "b": UNCHANGED_TOAST, "c": b"\x00\x01", "d": None}
        assert mixed["b"] is UNCHANGED_TOAST
    finally:
        conn.close()
