"""Listening never breaks the application's own writes.

Each test runs in a database of its own, since the event trigger flash_wal installs for
partitions created later is per database; the application's writes go through another
connection while a client listens, and the events must arrive.
"""

from typing import Callable, Iterator, List

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import Client, ClientConfig, ConfigurationError, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig
from flash_wal.drivers.wal_logical.identity import PARTITION_IDENTITY_TRIGGER

from tests.support.database import Database
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


@pytest.fixture
def own_db(db: Database, dsn: str, unique: str) -> Iterator[Database]:
    """An empty database of the test's own, as its owner (the superuser)."""
    name = f"identity_{unique}"
    db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = Database(psycopg2.extensions.make_dsn(dsn, dbname=name))
    try:
        yield database
    finally:
        database.close()
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def listening_role(db: Database, own_db: Database, unique: str) -> Iterator[str]:
    """A role that may replicate and owns what it creates, but is no superuser; its DSN."""
    role = f"listener_{unique}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION").format(sql.Identifier(role)))
    own_db.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
        sql.Identifier(own_db.conn.info.dbname), sql.Identifier(role)))
    own_db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        yield psycopg2.extensions.make_dsn(own_db.dsn, user=role)
    finally:
        own_db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def client_for(unique: str) -> Iterator[Callable[..., Client]]:
    clients: List[Client] = []

    def make(database_cnx: str, **driver_options) -> Client:
        driver = Driver(DriverConfig(publication_slot_prefix="pub", replication_slot=f"flash_{unique}",
                                     **driver_options))
        client = Client(ClientConfig(database_cnx=database_cnx, driver=driver, shutdown_timeout=5.0))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def identities(database: Database) -> dict:
    return dict(database.fetchall(
        "SELECT relname::text, relreplident::text FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p')"
    ))


def nothing_on_the_server(database: Database) -> bool:
    return (database.fetchall("SELECT 1 FROM pg_publication") == []
            and database.fetchall("SELECT 1 FROM pg_replication_slots WHERE database = current_database()") == [])


PARTITIONED = [
    "CREATE TABLE m (id int, k int, v text) PARTITION BY RANGE (k)",
    "CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (10) PARTITION BY RANGE (k)",
    "CREATE TABLE m1a PARTITION OF m1 FOR VALUES FROM (0) TO (5)",
    "CREATE TABLE m1b PARTITION OF m1 FOR VALUES FROM (5) TO (10)",
    "CREATE TABLE m2 PARTITION OF m FOR VALUES FROM (10) TO (20)",
]


def write_and_expect(app: Database, recorder: Recorder, table: str, k: int, row_id: int) -> None:
    """INSERT, UPDATE, DELETE one row through ``table`` (the parent or a partition); the
    three events arrive, as changes of m, with the whole old row."""
    before = len(recorder)
    name = sql.Identifier(table)
    app.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, 'a')").format(name), (row_id, k))
    app.execute(sql.SQL("UPDATE {} SET v = 'b' WHERE id = %s").format(name), (row_id,))
    app.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(name), (row_id,))
    insert, update, delete = recorder.wait(before + 3)[before:]
    assert insert.new == {"id": row_id, "k": k, "v": "a"}
    assert (update.old, update.new) == ({"id": row_id, "k": k, "v": "a"}, {"id": row_id, "k": k, "v": "b"})
    assert delete.old == {"id": row_id, "k": k, "v": "b"}
    assert {event.table for event in (insert, update, delete)} == {"public.m"}


def test_every_partition_present_and_future_gets_full_identity(own_db, client_for, server_version):
    if server_version < 130000:
        pytest.skip("partitioned tables are published from PostgreSQL 13")
    for statement in PARTITIONED:
        own_db.execute(statement)
    app = own_db
    recorder = Recorder()
    client = client_for(own_db.dsn)
    client.on("m")(recorder)
    with client:
        assert set(identities(own_db).values()) == {"f"}
        write_and_expect(app, recorder, "m", 1, 1)
        write_and_expect(app, recorder, "m1a", 2, 2)  # directly on a partition two levels down
        write_and_expect(app, recorder, "m2", 15, 3)
        # Partitions made while the client listens: created, attached, attached with
        # partitions of its own.
        app.execute("CREATE TABLE m3 PARTITION OF m FOR VALUES FROM (20) TO (30)")
        app.execute("CREATE TABLE m4 (id int, k int, v text)")
        app.execute("ALTER TABLE m ATTACH PARTITION m4 FOR VALUES FROM (30) TO (40)")
        app.execute("CREATE TABLE m5 (id int, k int, v text) PARTITION BY RANGE (k)")
        app.execute("CREATE TABLE m5a PARTITION OF m5 FOR VALUES FROM (40) TO (50)")
        app.execute("ALTER TABLE m ATTACH PARTITION m5 FOR VALUES FROM (40) TO (50)")
        for row_id, (table, k) in enumerate([("m3", 25), ("m4", 35), ("m5a", 45), ("m", 46)], start=4):
            write_and_expect(app, recorder, table, k, row_id)
        assert set(identities(own_db).values()) == {"f"}
    # The trigger stays, like the identities (the docs say how to undo both).
    assert own_db.fetchone("SELECT evtname FROM pg_event_trigger") == (PARTITION_IDENTITY_TRIGGER,)
    own_db.execute("CREATE TABLE unrelated (id int)")
    assert identities(own_db)["unrelated"] == "d"


def test_a_partitioned_table_without_primary_key_is_refused_when_new_partitions_would_break(
    own_db, listening_role, client_for, server_version
):
    """A role that is no superuser cannot install the event trigger; without a primary
    key on the parent a partition created later would have no identity."""
    if server_version < 130000:
        pytest.skip("partitioned tables are published from PostgreSQL 13")
    owner = Database(listening_role)
    try:
        for statement in PARTITIONED:
            owner.execute(statement)
        before = identities(own_db)
        client = client_for(listening_role)
        client.on("m")(lambda event: None)
        with pytest.raises(ConfigurationError) as raised:
            client.start()
        message = str(raised.value)
        assert ("public.m is partitioned, and a partition created or attached later would not get REPLICA "
                "IDENTITY FULL: the server would refuse the application's UPDATE and DELETE on it") in message
        assert "have a superuser install the event trigger " + PARTITION_IDENTITY_TRIGGER in message
        assert identities(own_db) == before and nothing_on_the_server(own_db)

        # With the trigger a superuser installed as the docs say, it starts.
        from flash_wal.drivers.wal_logical.identity import PARTITION_IDENTITY_SQL

        own_db.execute(PARTITION_IDENTITY_SQL)
        recorder = Recorder()
        client = client_for(listening_role)
        client.on("m")(recorder)
        with client:
            owner.execute("CREATE TABLE m3 PARTITION OF m FOR VALUES FROM (20) TO (30)")
            write_and_expect(owner, recorder, "m3", 25, 1)
    finally:
        owner.close()


def test_a_partitioned_table_with_primary_key_without_the_trigger(own_db, listening_role, client_for, server_version):
    """Without the trigger a partition created later keeps the identity of its primary
    key: FULL on the parent would then describe its old rows wrongly, so that is
    refused, and replica_identity_full=False works, new partitions included."""
    if server_version < 130000:
        pytest.skip("partitioned tables are published from PostgreSQL 13")
    owner = Database(listening_role)
    try:
        owner.execute("CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)")
        owner.execute("CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (10)")
        client = client_for(listening_role)
        client.on("m")(lambda event: None)
        with pytest.raises(ConfigurationError, match="its UPDATE and DELETE events would lack the old row"):
            client.start()
        assert identities(own_db) == {"m": "d", "m1": "d"} and nothing_on_the_server(own_db)

        recorder = Recorder()
        client = client_for(listening_role, replica_identity_full=False)
        client.on("m")(recorder)
        with client:
            owner.execute("CREATE TABLE m2 PARTITION OF m FOR VALUES FROM (10) TO (20)")
            for table, row_id, k in [("m1", 1, 1), ("m2", 2, 15)]:
                owner.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, 'a')").format(sql.Identifier(table)),
                              (row_id, k))
                owner.execute(sql.SQL("UPDATE {} SET v = 'b'").format(sql.Identifier(table)))
                owner.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
            events = recorder.wait(6)
        assert [event.old for event in events if event.operation is Operation.DELETE] == [
            {"id": 1, "k": 1}, {"id": 2, "k": 15}]
        assert own_db.fetchall("SELECT 1 FROM pg_event_trigger") == []
    finally:
        owner.close()


def test_a_table_without_primary_key_is_refused_with_identity_left_alone(own_db, client_for):
    own_db.execute("CREATE TABLE plain (id int, v text)")
    own_db.execute("CREATE TABLE keyed (id int PRIMARY KEY, v text)")
    own_db.execute("CREATE TABLE nothing (id int PRIMARY KEY, v text)")
    own_db.execute("ALTER TABLE nothing REPLICA IDENTITY NOTHING")
    client = client_for(own_db.dsn, replica_identity_full=False)
    for table in ("plain", "keyed", "nothing"):
        client.on(table)(lambda event: None)
    with pytest.raises(ConfigurationError) as raised:
        client.start()
    message = str(raised.value)
    assert "public.plain has no primary key" in message and "public.nothing has REPLICA IDENTITY NOTHING" in message
    assert "keyed" not in message and "replica_identity_full=True" in message
    assert nothing_on_the_server(own_db)
    assert identities(own_db) == {"plain": "d", "keyed": "d", "nothing": "n"}
    own_db.execute("UPDATE plain SET v = 'still writable'")


def test_attaching_a_table_without_primary_key_is_refused_and_changes_nothing(own_db, client_for):
    own_db.execute("CREATE TABLE keyed (id int PRIMARY KEY, v text)")
    own_db.execute("CREATE TABLE plain (id int, v text)")
    client = client_for(own_db.dsn, replica_identity_full=False)
    client.on("keyed")(lambda event: None)
    with client:
        from flash_wal import Listener

        with pytest.raises(ConfigurationError, match="public.plain has no primary key"):
            client.attach(Listener(table="plain"))
        assert own_db.fetchall("SELECT DISTINCT tablename::text FROM pg_publication_tables") == [("keyed",)]
        own_db.execute("INSERT INTO plain VALUES (1, 'a')")
        own_db.execute("DELETE FROM plain")


def test_a_table_without_primary_key_works_with_full_identity(own_db, client_for):
    own_db.execute("CREATE TABLE plain (id int, v text)")
    recorder = Recorder()
    client = client_for(own_db.dsn)
    client.on("plain")(recorder)
    with client:
        own_db.execute("INSERT INTO plain VALUES (1, 'a')")
        own_db.execute("UPDATE plain SET v = 'b'")
        own_db.execute("DELETE FROM plain")
        _, update, delete = recorder.wait(3)
    assert update.old == {"id": 1, "v": "a"} and delete.old == {"id": 1, "v": "b"}


@pytest.mark.parametrize("durable", [False, True], ids=["temporary", "resumed"])
def test_stored_generated_columns_keep_updates_and_deletes_working(own_db, client_for, server_version, durable):
    own_db.execute("CREATE TABLE g (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED)")
    if durable:
        # A durable publication made by an earlier version, without the option.
        client = client_for(own_db.dsn, durable=True)
        client.on("g")(lambda event: None)
        with client:
            pass
        if server_version >= 180000:
            for name in client.driver.config.publication_names:
                own_db.execute(sql.SQL("ALTER PUBLICATION {} SET (publish_generated_columns = none)").format(
                    sql.Identifier(name)))
    recorder = Recorder()
    client = client_for(own_db.dsn, durable=durable)
    client.on("g")(recorder)
    try:
        with client:
            own_db.execute("INSERT INTO g (id, a) VALUES (1, 1)")
            own_db.execute("UPDATE g SET a = 2")
            own_db.execute("DELETE FROM g")
            insert, update, delete = recorder.wait(3)
    finally:
        if durable:
            client.driver.drop(own_db.dsn)
    if server_version >= 180000:  # generated columns are published from 18 on
        assert insert.new == {"id": 1, "a": 1, "twice": 2}
        assert (update.old, update.new) == ({"id": 1, "a": 1, "twice": 2}, {"id": 1, "a": 2, "twice": 4})
        assert delete.old == {"id": 1, "a": 2, "twice": 4}
    else:
        assert insert.new == {"id": 1, "a": 1}
        assert (update.old, update.new) == ({"id": 1, "a": 1}, {"id": 1, "a": 2})
        assert delete.old == {"id": 1, "a": 2}


def test_a_virtual_generated_column_with_full_identity_is_refused(own_db, client_for, server_version):
    if server_version < 180000:
        pytest.skip("virtual generated columns are new in PostgreSQL 18")
    own_db.execute("CREATE TABLE v (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) VIRTUAL)")
    own_db.execute("INSERT INTO v (id, a) VALUES (1, 1)")
    client = client_for(own_db.dsn)
    client.on("v")(lambda event: None)
    with pytest.raises(ConfigurationError, match="public.v has the virtual generated column 'twice'.*STORED"):
        client.start()
    assert identities(own_db) == {"v": "d"} and nothing_on_the_server(own_db)
    # With the primary key as identity it listens, and the writes work.
    recorder = Recorder()
    client = client_for(own_db.dsn, replica_identity_full=False)
    client.on("v")(recorder)
    with client:
        own_db.execute("UPDATE v SET a = 2")
        own_db.execute("DELETE FROM v")
        update, delete = recorder.wait(2)
    assert update.new == {"id": 1, "a": 2} and delete.old == {"id": 1}
    wait_for(lambda: nothing_on_the_server(own_db), what="the slot to go")
