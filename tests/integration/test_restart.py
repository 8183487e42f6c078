"""Clients that die without close(), and clients side by side."""

import pytest
from psycopg2 import sql

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.processes import ConsumerProcess
from tests.support.recorder import Recorder


def test_client_killed_without_close_restarts_with_same_configuration(make_table, db, unique):
    table = make_table()
    slot, prefix = f"flash_{unique}", f"pub_{unique}"
    first = ConsumerProcess(db.dsn, table, slot, prefix)
    try:
        first.wait_line("streaming")
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('one')").format(sql.Identifier(table)))
        first.wait_line("event 1")
    finally:
        first.kill()
    assert db.publications(prefix) != []  # the killed client left its publication

    second = ConsumerProcess(db.dsn, table, slot, prefix)
    try:
        second.wait_line("streaming")
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('two')").format(sql.Identifier(table)))
        second.wait_line("event 2")
    finally:
        second.kill()

    # and an in-process client with the same names starts, then cleans everything up
    recorder = Recorder()
    client = Client(database_cnx=db.dsn, driver=Driver(DriverConfig(replication_slot=slot, publication_slot_prefix=prefix)))
    client.on(table, Operation.INSERT)(recorder)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('three')").format(sql.Identifier(table)))
        assert recorder.wait(1)[0].new["id"] == 3
    assert db.slots(slot) == []
    assert db.publications(prefix) == []


def test_two_clients_with_different_names_side_by_side(make_client, make_table, db):
    table = make_table()
    a, b = Recorder(), Recorder()
    client_a, client_b = make_client(), make_client()
    client_a.on(table, Operation.INSERT)(a)
    client_b.on(table, Operation.INSERT | Operation.DELETE)(b)
    with client_a, client_b:
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 10)").format(sql.Identifier(table)))
        db.execute(sql.SQL("DELETE FROM {} WHERE id <= 3").format(sql.Identifier(table)))
        b.wait(13)
        a.wait(10)
        client_a.close()
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('after a closed')").format(sql.Identifier(table)))
        b.wait(14)
    assert len(a) == 10 and len(b) == 14
    assert b.events[-1].new["title"] == "after a closed"


HOSTILE_NAMES = [
    'Robert"); DROP TABLE students;--',
    "with space",
    "MiXeD",
    "ünïcødé ✓",
    "dot.in.name",
    "single'quote",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_table_and_schema_names(make_client, db, unique, name):
    schema = f"{unique} Sch\"ema"
    db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        db.execute(sql.SQL("CREATE TABLE {}.{} (id int PRIMARY KEY, {} text)").format(
            sql.Identifier(schema), sql.Identifier(name), sql.Identifier(name)))
        quoted = '"{}"."{}"'.format(schema.replace('"', '""'), name.replace('"', '""'))
        recorder = Recorder()
        client = make_client()
        client.on(quoted)(recorder)
        with client:
            db.execute(sql.SQL("INSERT INTO {}.{} VALUES (1, 'v')").format(sql.Identifier(schema), sql.Identifier(name)))
            db.execute(sql.SQL("TRUNCATE {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
            inserted, truncated = recorder.wait(2)
        assert inserted.table == f"{schema}.{name}"
        assert inserted.new == {"id": 1, name: "v"}
        assert truncated.table == f"{schema}.{name}"
        assert db.fetchone("SELECT count(*) FROM pg_class WHERE relname = 'students'")[0] == 0
    finally:
        db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
