"""A value psycopg2 cannot turn into a Python object arrives as its text, with one
WARNING per column, and never stops the stream: later rows arrive typed, other
listeners go on."""

import datetime
import logging

import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.database import Database
from tests.support.recorder import Recorder

# column: (SQL type, a value psycopg2 cannot represent, the text it arrives as)
UNDECODABLE = {
    "bc_date": ("date", "0044-03-15 BC", "0044-03-15 BC"),
    "far_date": ("date", "10000-01-01", "10000-01-01"),
    "bc_ts": ("timestamp", "0044-03-15 12:00 BC", "0044-03-15 12:00:00 BC"),
    "far_tstz": ("timestamptz", "294276-01-01 00:00+00", "294276-01-01 00:00:00+00"),
    "huge_iv": ("interval", "1000000000 days", "1000000000 days"),
    "years_iv": ("interval", "178000000 years", "178000000 years"),
    "bc_dates": ("date[]", "{2020-01-01,0044-03-15 BC}", '{2020-01-01,"0044-03-15 BC"}'),
    "far_tss": ("timestamp[]", "{10000-01-01 00:00}", '{"10000-01-01 00:00:00"}'),
}
#: What the same columns hold in a row that decodes.
TYPED = {
    "bc_date": datetime.date(2024, 1, 2),
    "far_date": datetime.date(9999, 12, 31),
    "bc_ts": datetime.datetime(2024, 1, 2, 3, 4, 5),
    "far_tstz": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "huge_iv": datetime.timedelta(days=999999999),
    "years_iv": datetime.timedelta(days=3),
    "bc_dates": [datetime.date(2020, 1, 1)],
    "far_tss": [datetime.datetime(2020, 1, 1)],
}


def _insert(db, table, row_id, values):
    names = list(values)
    db.execute(sql.SQL("INSERT INTO {} (id, {}) VALUES (%s, {})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    ), [row_id] + [values[name] for name in names])


def _undecodable_warnings(caplog):
    return [r for r in caplog.records
            if r.levelno == logging.WARNING and "cannot turn into a Python object" in r.getMessage()]


def test_values_psycopg2_cannot_represent_arrive_as_text_and_the_stream_goes_on(make_client, make_table, db, caplog):
    caplog.set_level(logging.WARNING, logger="flash_wal")
    table = make_table("id int PRIMARY KEY, note text, "
                       + ", ".join(f"{name} {kind}" for name, (kind, _, _) in UNDECODABLE.items()))
    other = make_table()
    rows, others = Recorder(), Recorder()
    client = make_client()
    client.on(table, Operation.INSERT | Operation.UPDATE)(rows)
    client.on(other, Operation.INSERT)(others)
    with client:
        bad = {name: value for name, (_, value, _) in UNDECODABLE.items()}
        _insert(db, table, 1, dict(bad, note="first"))
        _insert(db, table, 2, dict(bad, note="second"))
        _insert(db, table, 3, dict(TYPED, note="typed"))
        db.execute(sql.SQL("UPDATE {} SET note = 'updated' WHERE id = 1").format(sql.Identifier(table)))
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('other listener')").format(sql.Identifier(other)))
        first, second, typed, updated = rows.wait(4)
        assert others.wait(1)[0].new["title"] == "other listener"
    text = {name: shown for name, (_, _, shown) in UNDECODABLE.items()}
    assert first.new == dict(text, id=1, note="first")
    assert second.new == dict(text, id=2, note="second")
    assert typed.new == dict(TYPED, id=3, note="typed")
    assert updated.new == dict(text, id=1, note="updated")
    warnings = _undecodable_warnings(caplog)
    assert sorted(r.args[0] for r in warnings) == sorted(UNDECODABLE), [r.getMessage() for r in warnings]
    assert all(r.args[1] == f"public.{table}" for r in warnings)


def test_infinite_dates_decode_to_the_ends_of_pythons_range(make_client, make_table, db, caplog):
    """psycopg2 maps 'infinity' to date.max and '-infinity' to date.min: typed, no warning."""
    table = make_table("id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz")
    rows = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(rows)
    with client:
        _insert(db, table, 1, {"d": "infinity", "ts": "infinity", "tstz": "-infinity"})
        row = rows.wait(1)[0].new
    assert row == {"id": 1, "d": datetime.date.max, "ts": datetime.datetime.max,
                   "tstz": datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)}
    assert _undecodable_warnings(caplog) == []


@pytest.fixture
def sql_ascii_db(db, unique):
    """A SQL_ASCII database: the server stores and sends whatever bytes it is given."""
    name = f"{unique}_ascii"
    db.execute(sql.SQL("CREATE DATABASE {} ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
               .format(sql.Identifier(name)))
    database = Database(psycopg2.extensions.make_dsn(db.dsn, dbname=name))
    yield database
    database.close()
    db.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_bytes_invalid_in_utf8_arrive_as_escaped_text(sql_ascii_db, unique, caplog):
    caplog.set_level(logging.WARNING, logger="flash_wal")
    sql_ascii_db.execute("CREATE TABLE latin (id int PRIMARY KEY, name text, names text[], doc json)")
    rows = Recorder()
    slot = f"flash_{unique}"
    client = Client(database_cnx=sql_ascii_db.dsn, shutdown_timeout=5, driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{slot}", replication_slot=slot)))
    client.on("latin", Operation.INSERT)(rows)
    with client:
        # 0xE9 is 'é' in Latin-1, and not UTF-8 on its own; 0xC3 0xBC is 'ü' in UTF-8.
        sql_ascii_db.execute(
            "INSERT INTO latin VALUES (1, convert_from('\\x636166e9'::bytea, 'SQL_ASCII'),"
            " ARRAY[convert_from('\\x636166e9'::bytea, 'SQL_ASCII')], '{\"a\": 1}')")
        sql_ascii_db.execute(
            "INSERT INTO latin VALUES (2, convert_from('\\xc3bc'::bytea, 'SQL_ASCII'), ARRAY['x'],"
            " convert_from('\\x7b2262223a2022c3bc227d'::bytea, 'SQL_ASCII')::json)")
        first, second = rows.wait(2)
    assert first.new == {"id": 1, "name": "caf\\xe9", "names": "{caf\\xe9}", "doc": {"a": 1}}
    assert second.new == {"id": 2, "name": "\u00fc", "names": ["x"], "doc": {"b": "\u00fc"}}
    assert sorted(r.args[0] for r in _undecodable_warnings(caplog)) == ["name", "names"]
    assert sql_ascii_db.slots(slot) == []
