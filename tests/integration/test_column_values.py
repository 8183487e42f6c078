"""column_types.column_values: a text read as its column's type equals that column's values
in events, which is how ``flash-wal listen --where COLUMN=VALUE`` compares."""

import re

import pytest
from psycopg2 import sql

from flash_wal import Condition, ConfigurationError, Operation
from flash_wal.drivers.wal_logical import catalog, column_types
from flash_wal.table_name import TableName

from tests.support.recorder import Recorder

# column type, the text given, and a text of the same value written otherwise
CASES = {
    "flag": ("boolean", "true", "t"),
    "n": ("int", "42", " 42"),
    "price": ("numeric(10,2)", "9.5", "9.50"),
    "code": ("char(5)", "ab", "ab   "),
    "day": ("date", "2025-01-31", "Jan 31 2025"),
    "at": ("timestamptz", "2025-01-31 12:00:00+02", "2025-01-31T10:00:00Z"),
    "u": ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC999C0B4EF8BB6D6BB9BD380A11"),
    "meta": ("jsonb", '{"a": [1, 2]}', '{ "a" : [1,2] }'),
    "tags": ("text[]", "{a,b c}", '{"a","b c"}'),
    "raw": ("bytea", "\\x00ff", "\\x00FF"),
    "mood": ("{mood}", "happy", "happy"),
    "small": ("{small}", "3", "03"),
}


@pytest.fixture
def typed_table(db, make_table, unique):
    mood, small = f"mood_{unique}", f"small_{unique}"
    db.execute(sql.SQL("CREATE TYPE {} AS ENUM ('happy', 'sad')").format(sql.Identifier(mood)))
    db.execute(sql.SQL("CREATE DOMAIN {} AS int CHECK (VALUE < 10)").format(sql.Identifier(small)))
    try:
        columns = ", ".join(
            f"{name} " + (kind.format(mood=f'"{mood}"', small=f'"{small}"')) for name, (kind, _, _) in CASES.items()
        )
        yield make_table("id int PRIMARY KEY, " + columns)
    finally:
        for name in (mood, small):
            db.execute(sql.SQL("DROP TYPE IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_a_text_read_as_its_column_equals_the_value_events_carry(typed_table, make_client, db):
    table = typed_table
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(recorder)
    with client:
        names = list(CASES)
        db.execute(
            sql.SQL("INSERT INTO {} (id, {}) VALUES (1, {})").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)),
                sql.SQL(", ").join(sql.Placeholder() * len(names))),
            [CASES[name][1] for name in names],
        )
        (event,) = recorder.wait(1)

    cursor = db.conn.cursor()
    info = catalog.describe_tables(cursor, [TableName("public", table)])[TableName("public", table)]
    for column in (1, 2):  # the text as inserted, and the same value written otherwise
        values = column_types.column_values(cursor, info, {name: case[column] for name, case in CASES.items()})
        for name, value in values.items():
            assert value == event.new[name] and type(value) is type(event.new[name]), (name, value)
            assert Condition(name, value).holds(event.new)


def test_a_text_the_column_cannot_hold_is_a_configuration_error(make_table, db):
    table = make_table("id int PRIMARY KEY, n int, code char(2), meta jsonb")
    cursor = db.conn.cursor()
    info = catalog.describe_tables(cursor, [TableName("public", table)])[TableName("public", table)]
    for texts, message in (
        ({"n": "many"}, 'invalid input syntax for type integer: "many"'),
        ({"code": "abc"}, "value too long for type character(2)"),
        ({"meta": "{nope"}, "holds JSON, and '{nope' is not JSON"),
        ({"N": "1"}, "has no column 'N' (it has id, n, code, meta); column names are case-sensitive"),
    ):
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            column_types.column_values(cursor, info, texts)
    assert column_types.column_values(cursor, info, {}) == {}
