"""Row keys (``primary_key``, ``event.key``) and key changes, on a real server."""

import threading

import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import Client, Condition, ConfigurationError, Listener, Operation, UpdateEvent
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.database import Database
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def run(db, statement, table, params=None):
    db.execute(sql.SQL(statement).format(sql.Identifier(table)), params)


def listening(client, table, operations=Operation.ALL, **options):
    recorder = Recorder()
    listener = Listener(table=table, **options)
    listener.on(operations, recorder)
    client.attach(listener)
    return recorder


def driver_without_full_identity(unique):
    slot = f"nf_{unique}"
    return Driver(DriverConfig(publication_slot_prefix=f"p_{slot}", replication_slot=slot,
                               replica_identity_full=False))


def assert_nothing_left(db, client):
    config = client.driver.config
    assert db.slots(config.replication_slot) == []
    assert db.publications(config.publication_slot_prefix) == []


def summary(events):
    return [(type(event).__name__, event.key) for event in events]


def test_single_composite_and_missing_keys(make_client, make_table, db):
    single = make_table("id int PRIMARY KEY, title text")
    composite = make_table("a int, b text, note text, PRIMARY KEY (b, a)")  # key order is not column order
    keyless = make_table("n int, note text")
    client = make_client()
    on_single = listening(client, single, fields=["title"])  # the key whatever fields says
    on_composite = listening(client, composite)
    on_keyless = listening(client, keyless)
    changes = {
        single: ("INSERT INTO {} VALUES (1, 'x')", "UPDATE {} SET title = 'y'"),
        composite: ("INSERT INTO {} VALUES (1, 'p', 'q')", "UPDATE {} SET note = 'r'"),
        keyless: ("INSERT INTO {} VALUES (1, 'x')", "UPDATE {} SET n = 2"),
    }
    with client:
        for table, statements in changes.items():
            for statement in statements + ("DELETE FROM {}",):
                run(db, statement, table)
        singles, composites, keyless_events = on_single.wait(3), on_composite.wait(3), on_keyless.wait(3)
    assert summary(singles) == [("InsertEvent", (1,)), ("UpdateEvent", (1,)), ("DeleteEvent", (1,))]
    assert singles[0].new == {"title": "x"}
    assert summary(composites) == [("InsertEvent", ("p", 1)), ("UpdateEvent", ("p", 1)), ("DeleteEvent", ("p", 1))]
    assert summary(keyless_events) == [("InsertEvent", None), ("UpdateEvent", None), ("DeleteEvent", None)]


def test_a_configured_key(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, email text, tenant int")
    client = make_client()
    recorder = listening(client, table, primary_key=("tenant", "email"), fields=["id"])
    with client:
        run(db, "INSERT INTO {} VALUES (1, 'a@x', 7)", table)
        run(db, "UPDATE {} SET id = 2", table)  # the table's key changes, the listener's does not
        run(db, "DELETE FROM {}", table)
        events = recorder.wait(3)
    assert summary(events) == [("InsertEvent", (7, "a@x")), ("UpdateEvent", (7, "a@x")), ("DeleteEvent", (7, "a@x"))]
    assert events[1].old == {"id": 1} and events[1].new == {"id": 2}


def test_a_configured_key_the_table_lacks_is_refused(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, email text")
    client = make_client()
    client.attach(Listener(table=table, primary_key=("email", "nope")))
    with pytest.raises(ConfigurationError, match=rf"primary_key names 'nope'.*{table}"):
        client.start()
    assert_nothing_left(db, client)


def test_a_configured_key_the_replica_identity_does_not_cover_is_refused(make_client, make_table, db, unique):
    table = make_table("id int PRIMARY KEY, email text")
    client = make_client(driver=driver_without_full_identity(unique))
    client.attach(Listener(table=table, primary_key=("email",)))
    with pytest.raises(ConfigurationError, match=rf"Listener.*'email' of table public.{table} is not in its replica"):
        client.start()
    assert_nothing_left(db, client)
    identity = db.fetchone("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (table,))[0]
    assert identity == "d"


def test_attach_after_start_checks_the_key_too(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY")
    client = make_client()
    with client:
        with pytest.raises(ConfigurationError, match="primary_key names 'nope'"):
            client.attach(Listener(table=table, primary_key=("nope",)))


def test_a_key_change_is_a_delete_then_an_insert(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, title text, status text")
    client = make_client()
    everything = listening(client, table)
    inserts_only = listening(client, table, Operation.INSERT)
    updates_only = listening(client, table, Operation.UPDATE)
    titles = listening(client, table, fields=["title"])
    with client:
        run(db, "INSERT INTO {} VALUES (1, 't', 'a')", table)
        run(db, "UPDATE {} SET id = 2", table)
        run(db, "UPDATE {} SET title = 'u'", table)  # a marker: every change before it arrived
        events = everything.wait(4)
        wait_for(lambda: len(updates_only) >= 1 and len(titles) >= 4 and len(inserts_only) >= 2)
    assert summary(events) == [("InsertEvent", (1,)), ("DeleteEvent", (1,)), ("InsertEvent", (2,)),
                               ("UpdateEvent", (2,))]
    delete, insert = events[1], events[2]
    assert delete.old == {"id": 1, "title": "t", "status": "a"}
    assert insert.new == {"id": 2, "title": "t", "status": "a"}
    assert delete.lsn == insert.lsn and delete.commit_lsn == insert.commit_lsn and delete.xid == insert.xid
    assert summary(inserts_only.events) == [("InsertEvent", (1,)), ("InsertEvent", (2,))]
    assert summary(updates_only.events) == [("UpdateEvent", (2,))]
    # No field changed, and the key did: both halves, shaped by fields.
    assert [(type(e).__name__, e.key, getattr(e, "new", None) or e.old) for e in titles.events[:3]] == [
        ("InsertEvent", (1,), {"title": "t"}), ("DeleteEvent", (1,), {"title": "t"}),
        ("InsertEvent", (2,), {"title": "t"}),
    ]


def test_key_changes_follow_the_conditions(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, status text")
    client = make_client()
    active = listening(client, table, conditions=[Condition("status", "a")])
    deletes = listening(client, table, Operation.DELETE, conditions=[Condition("status", "a")])
    with client:
        run(db, "INSERT INTO {} VALUES (1, 'a'), (10, 'b')", table)
        run(db, "UPDATE {} SET id = 2, status = 'b' WHERE id = 1", table)  # leaves: the delete only
        run(db, "UPDATE {} SET id = 11, status = 'a' WHERE id = 10", table)  # enters: the insert only
        run(db, "UPDATE {} SET id = 12 WHERE id = 11", table)  # stays: both
        run(db, "UPDATE {} SET id = 3 WHERE id = 2", table)  # stays out: nothing
        run(db, "DELETE FROM {} WHERE id = 12", table)
        events = active.wait(6)
        wait_for(lambda: len(deletes) >= 3)
    assert summary(events) == [
        ("InsertEvent", (1,)), ("DeleteEvent", (1,)), ("InsertEvent", (11,)),
        ("DeleteEvent", (11,)), ("InsertEvent", (12,)), ("DeleteEvent", (12,)),
    ]
    assert summary(deletes.events) == [("DeleteEvent", (1,)), ("DeleteEvent", (11,)), ("DeleteEvent", (12,))]


def test_keys_and_key_changes_without_full_identity(make_client, make_table, db, unique):
    table = make_table("a int, b int, note text, PRIMARY KEY (a, b)")
    client = make_client(driver=driver_without_full_identity(unique))
    recorder = listening(client, table)
    part = listening(client, table, primary_key=("b",))  # covered by the identity
    with client:
        run(db, "INSERT INTO {} VALUES (1, 2, 'x')", table)
        run(db, "UPDATE {} SET note = 'y'", table)
        run(db, "UPDATE {} SET a = 5", table)
        run(db, "DELETE FROM {}", table)
        events = recorder.wait(5)
        wait_for(lambda: len(part) >= 4)
    assert summary(events) == [("InsertEvent", (1, 2)), ("UpdateEvent", (1, 2)), ("DeleteEvent", (1, 2)),
                               ("InsertEvent", (5, 2)), ("DeleteEvent", (5, 2))]
    assert events[1].old is None
    assert events[2].old == {"a": 1, "b": 2}  # the server sent the old key only
    assert events[3].new == {"a": 5, "b": 2, "note": "y"}
    assert events[4].old == {"a": 5, "b": 2}
    # The listener's own key did not change: an update, as any other.
    assert summary(part.events) == [("InsertEvent", (2,)), ("UpdateEvent", (2,)), ("UpdateEvent", (2,)),
                                    ("DeleteEvent", (2,))]
    assert isinstance(part.events[2], UpdateEvent) and part.events[2].old == {"a": 1, "b": 2}


def test_the_identity_index_is_the_key_without_a_primary_key(make_client, make_table, db, unique):
    table = make_table("code text NOT NULL, n int")
    db.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} (code)").format(
        sql.Identifier(f"{table}_code"), sql.Identifier(table)))
    db.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
        sql.Identifier(table), sql.Identifier(f"{table}_code")))
    client = make_client(driver=driver_without_full_identity(unique))
    recorder = listening(client, table)
    with client:
        run(db, "INSERT INTO {} VALUES ('k', 1)", table)
        run(db, "DELETE FROM {}", table)
        events = recorder.wait(2)
    assert summary(events) == [("InsertEvent", ("k",)), ("DeleteEvent", ("k",))]


def test_the_key_follows_schema_changes(make_client, make_table, db):
    """With FULL identity the key comes from the catalog when the Relation arrives:
    each change is awaited before the next ALTER."""
    table = make_table("id int NOT NULL, code text NOT NULL")
    client = make_client()
    recorder = listening(client, table, Operation.INSERT | Operation.DELETE)
    with client:
        run(db, "INSERT INTO {} VALUES (1, 'a')", table)
        recorder.wait(1)
        run(db, "ALTER TABLE {} ADD CONSTRAINT the_key PRIMARY KEY (id)", table)
        run(db, "INSERT INTO {} VALUES (2, 'b')", table)
        recorder.wait(2)
        run(db, "UPDATE {} SET id = 3 WHERE id = 2", table)  # a key change: INSERT and DELETE listeners get it
        recorder.wait(4)
        run(db, "ALTER TABLE {} DROP CONSTRAINT the_key, ADD PRIMARY KEY (code, id)", table)
        run(db, "INSERT INTO {} VALUES (4, 'd')", table)
        recorder.wait(5)
        db.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(table), sql.Identifier(f"{table}_pkey")))
        run(db, "INSERT INTO {} VALUES (5, 'e')", table)
        events = recorder.wait(6)
    assert summary(events) == [
        ("InsertEvent", None), ("InsertEvent", (2,)), ("DeleteEvent", (2,)), ("InsertEvent", (3,)),
        ("InsertEvent", ("d", 4)), ("InsertEvent", None),
    ]


def test_the_key_follows_schema_changes_in_a_backlog_without_full_identity(make_client, make_table, db, unique):
    """Under REPLICA IDENTITY DEFAULT the key comes from the Relation message's flags,
    as the WAL had it, even when the catalog has moved on before the change is read;
    the catalog gives only the key's order."""
    table = make_table("id int NOT NULL, code text NOT NULL, CONSTRAINT first_key PRIMARY KEY (id)")
    # The first callback holds the stream (one queued event at most) until the catalog
    # has moved on twice: the later Relation messages are read against the last schema.
    client = make_client(driver=driver_without_full_identity(unique), max_queued_events=1)
    recorder = Recorder()
    gate = threading.Event()
    client.on(table, Operation.INSERT)(lambda event: (gate.wait(30), recorder(event)))
    with client:
        run(db, "INSERT INTO {} VALUES (1, 'a')", table)
        run(db, "ALTER TABLE {} DROP CONSTRAINT first_key, ADD CONSTRAINT second_key PRIMARY KEY (code)", table)
        run(db, "INSERT INTO {} VALUES (2, 'b')", table)
        run(db, "ALTER TABLE {} DROP CONSTRAINT second_key, ADD CONSTRAINT third_key PRIMARY KEY (code, id)", table)
        run(db, "INSERT INTO {} VALUES (3, 'c')", table)
        run(db, "ALTER TABLE {} DROP CONSTRAINT third_key", table)
        gate.set()
        events = recorder.wait(3)
    # The last key's columns are right; its order, which the catalog no longer knows, is
    # the columns' (the flags'), not the dropped key's ("c", 3).
    assert summary(events) == [("InsertEvent", (1,)), ("InsertEvent", ("b",)), ("InsertEvent", (3, "c"))]


def test_a_partitioned_table_has_its_primary_key(make_client, make_table, db):
    table = make_table("id int, region text, PRIMARY KEY (region, id)) PARTITION BY LIST (region")
    db.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ('eu')").format(
        sql.Identifier(f"{table}_eu"), sql.Identifier(table)))
    client = make_client()
    recorder = listening(client, table)
    with client:
        run(db, "INSERT INTO {} VALUES (1, 'eu')", table)
        run(db, "UPDATE {} SET id = 2", table)
        events = recorder.wait(3)
    assert summary(events) == [("InsertEvent", ("eu", 1)), ("DeleteEvent", ("eu", 1)), ("InsertEvent", ("eu", 2))]


def test_a_key_change_inside_a_streamed_transaction(make_client, make_table, db, unique, server_version):
    """The schema changes inside a transaction the server streams while in progress:
    the rows before the change have the old key, the rows after it the new one."""
    if server_version < 140000:
        pytest.skip("streaming of in-progress transactions needs PostgreSQL 14")
    table = make_table("a int NOT NULL, b int NOT NULL, CONSTRAINT first_key PRIMARY KEY (a)")
    slot = f"st_{unique}"
    client = Client(
        database_cnx=psycopg2.extensions.make_dsn(db.dsn, options="-c logical_decoding_work_mem=64kB"),
        shutdown_timeout=5,
        driver=Driver(DriverConfig(publication_slot_prefix=f"p_{slot}", replication_slot=slot,
                                   use_streaming=True, replica_identity_full=False)),
    )
    recorder = listening(client, table, Operation.INSERT)
    writer = Database(db.dsn)
    writer.conn.autocommit = False
    try:
        with client:
            run(writer, "INSERT INTO {} SELECT i, -i FROM generate_series(1, 3000) i", table)
            run(writer, "ALTER TABLE {} DROP CONSTRAINT first_key, ADD CONSTRAINT second_key PRIMARY KEY (b)", table)
            run(writer, "INSERT INTO {} VALUES (0, 7)", table)
            writer.conn.commit()
            events = recorder.wait(3001)
    finally:
        writer.close()
    assert db.slots(slot) == []
    assert [event.key for event in events[:2]] == [(1,), (2,)] and events[2999].key == (3000,)
    assert events[3000].key == (7,)


def test_the_key_is_found_when_the_catalog_connection_was_lost(make_client, make_table, db):
    table = make_table("id int NOT NULL, note text")
    client = make_client()
    recorder = listening(client, table, Operation.INSERT)
    # The replication thread's catalog connection is the one whose last query was the key's.
    catalog_backend = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'flash_wal'"
        " AND backend_type = 'client backend' AND query LIKE '%%indisprimary DESC LIMIT 1%%'"
    )
    with client:
        run(db, "INSERT INTO {} VALUES (1, 'a')", table)
        recorder.wait(1)
        pid = wait_for(lambda: db.fetchone(catalog_backend), what="the catalog connection")[0]
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: db.fetchone("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)) is None,
                 what="the catalog connection to end")
        run(db, "ALTER TABLE {} ADD PRIMARY KEY (id)", table)
        run(db, "INSERT INTO {} VALUES (2, 'b')", table)
        events = recorder.wait(2)
    assert summary(events) == [("InsertEvent", None), ("InsertEvent", (2,))]
