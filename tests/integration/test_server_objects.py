"""Server objects of two configurations never collide, and flash_wal drops or changes
only what it made (slots, publications, the slot's lock, replica identity)."""

import logging
import os
import socket

import pytest
from psycopg2 import sql

from flash_wal import Client, ConfigurationError, Operation
from flash_wal.errors import SlotInUseError
from flash_wal.drivers.wal_logical import Driver, DriverConfig, catalog

from tests.support.database import Database
from tests.support.publications import published_tables, publications_exist
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def insert(db, table, title="x"):
    db.execute(sql.SQL("INSERT INTO {} (title) VALUES (%s)").format(sql.Identifier(table)), (title,))


def publication_tables(db, name):
    return sorted(row[0] for row in db.fetchall(
        "SELECT tablename::text FROM pg_publication_tables WHERE pubname = %s", (name,)))


def relreplident(db, table):
    return db.fetchone("SELECT relreplident::text FROM pg_class WHERE oid = %s::regclass",
                       (sql.Identifier(table).as_string(db.conn),))[0]


def slot_kind(db, slot):
    return db.fetchone("SELECT plugin::text, temporary, active FROM pg_replication_slots WHERE slot_name = %s",
                       (slot,))


# --- point 7: names ----------------------------------------------------------------------


def test_configurations_whose_names_joined_by_an_underscore_meet_use_different_publications(
        make_client, make_table, db, unique):
    """Prefix p + slot x_s and prefix p_x + slot s: once the same publication p_x_s."""
    first_table, second_table = make_table(), make_table()
    first = make_client(driver=Driver(DriverConfig(publication_slot_prefix=f"p{unique}", replication_slot=f"x_s{unique}")))
    second = make_client(driver=Driver(DriverConfig(publication_slot_prefix=f"p{unique}_x", replication_slot=f"s{unique}")))
    first_events, second_events = Recorder(), Recorder()
    first.on(first_table, Operation.INSERT)(first_events)
    second.on(second_table, Operation.INSERT)(second_events)
    with first, second:
        first_config, second_config = first.driver.config, second.driver.config
        assert not set(first_config.publication_names) & set(second_config.publication_names)
        assert published_tables(db, first_config) == [first_table]
        assert published_tables(db, second_config) == [second_table]
        insert(db, first_table)
        insert(db, second_table)
        assert len(first_events.wait(1)) == 1 and len(second_events.wait(1)) == 1

        first.close()
        assert publications_exist(db, first_config) == []
        assert published_tables(db, second_config) == [second_table]  # not dropped with the other
        insert(db, second_table, "after the other closed")
        assert second_events.wait(2)[-1].new["title"] == "after the other closed"


def test_every_publication_name_starts_with_the_prefix_and_fits():
    config = DriverConfig(publication_slot_prefix="orders", replication_slot="flash_replication")
    assert config.publication_name == "orders-flash_replication"
    assert sorted(config.publication_names) == [f"orders-flash_replication-{operation}"
                                                for operation in ("delete", "insert", "truncate", "update")]
    with pytest.raises(ConfigurationError, match="shorten"):
        DriverConfig(publication_slot_prefix="p" * 27, replication_slot="s" * 27)
    longest = DriverConfig(publication_slot_prefix="p" * 27, replication_slot="s" * 26).publication_names
    assert max(map(len, longest)) == 63


# --- point 8: what flash_wal made ----------------------------------------------------------


@pytest.mark.parametrize("make_slot, what", [
    ("SELECT pg_create_physical_replication_slot(%s)", "physical slot"),
    ("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", "does not exist"),
])
def test_temporary_client_leaves_an_inactive_slot_it_did_not_make_alone(make_client, make_table, db, unique,
                                                                         make_slot, what):
    table = make_table()
    slot = f"flash_{unique}"
    db.execute(make_slot, (slot,))
    try:
        before = slot_kind(db, slot)
        client = make_client(slot=slot)
        client.on(table)(lambda event: None)
        with pytest.raises(ConfigurationError, match=f"{slot}.*{what}"):
            client.start()
        assert slot_kind(db, slot) == before  # still there, as it was
    finally:
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_temporary_client_replaces_the_durable_slot_of_its_own_configuration(make_client, make_table, db, unique):
    table = make_table()
    slot = f"flash_{unique}"
    config = dict(publication_slot_prefix=f"pub_{slot}", replication_slot=slot)
    durable = Client(database_cnx=db.dsn, driver=Driver(DriverConfig(durable=True, **config)))
    durable.on(table)(lambda event: None)
    with durable:
        pass
    wait_for(lambda: slot_kind(db, slot) == ("pgoutput", False, False), what="the durable slot, inactive")
    client = make_client(driver=Driver(DriverConfig(**config)))
    client.on(table)(lambda event: None)
    with client:
        assert slot_kind(db, slot) == ("pgoutput", True, True)


@pytest.mark.parametrize("durable", [False, True])
def test_a_publication_flash_wal_did_not_make_is_neither_replaced_nor_altered(make_table, db, unique, durable):
    table, theirs = make_table(), make_table()
    config = DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", durable=durable)
    db.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
        sql.Identifier(config.publication_name), sql.Identifier(theirs)))
    try:
        client = Client(database_cnx=db.dsn, driver=Driver(config))
        client.on(table)(lambda event: None)
        with pytest.raises(ConfigurationError, match=f"publication '{config.publication_name}' exists but flash_wal"):
            client.start()
        assert publication_tables(db, config.publication_name) == [theirs]
        assert db.slots(config.replication_slot) == []
        with pytest.raises(ConfigurationError, match="did not make it"):
            Driver(config).drop(db.dsn)
        assert publication_tables(db, config.publication_name) == [theirs]
    finally:
        db.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(config.publication_name)))


def test_durable_slot_of_an_older_version_resumes_with_its_old_publication(make_table, db, unique, caplog):
    table = make_table()
    prefix, slot = f"pub_{unique}", f"flash_{unique}"
    old_name = f"{prefix}_{slot}"  # what flash_wal 0.1.0 made, with no comment
    db.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(old_name), sql.Identifier(table)))
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    insert(db, table, "while the old version was stopped")
    config = DriverConfig(publication_slot_prefix=prefix, replication_slot=slot, durable=True)
    recorder = Recorder()
    client = Client(database_cnx=db.dsn, driver=Driver(config))
    client.on(table, Operation.INSERT)(recorder)
    try:
        with caplog.at_level(logging.WARNING, logger="flash_wal"), client:
            assert recorder.wait(1)[0].new["title"] == "while the old version was stopped"
        assert f"with its publication {old_name}, named as by flash_wal 0.1.0" in caplog.text
        assert db.publications(prefix) == [old_name]  # kept, and no second one
    finally:
        Driver(config).drop(db.dsn)
    assert db.slots(slot) == [] and db.publications(prefix) == []


# --- point 9: the slot's lock after a server restart ----------------------------------------


@pytest.fixture
def restartable(pg_server, dsn, unique):
    """A table of its own (the shared ``db`` connection does not survive a restart)."""
    if pg_server is None:
        pytest.skip("needs a server the tests start themselves")
    table = f"restart_{unique}"
    setup = Database(dsn)
    setup.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, title text)").format(sql.Identifier(table)))
    setup.close()
    yield table
    cleanup = Database(dsn)
    cleanup.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    cleanup.close()


def restart_driver(unique):
    return Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}",
                               slot_wait_timeout=0.5, reconnect_delay=0.1, reconnect_max_delay=0.5))


def test_slot_lock_is_taken_again_after_a_server_restart(pg_server, dsn, unique, restartable):
    client = Client(database_cnx=dsn, driver=restart_driver(unique))
    client.on(restartable)(lambda event: None)
    with client:
        pg_server.restart()
        wait_for(lambda: client.stats()["reconnects"] >= 1, timeout=60, what="the reconnect")
        check = Database(dsn)
        try:
            # What a second instance's start() tries first.
            assert check.fetchone("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                  (catalog.SLOT_LOCK, f"flash_{unique}"))[0] is False
        finally:
            check.close()
        second = Client(database_cnx=dsn, driver=restart_driver(unique))
        second.on(restartable)(lambda event: None)
        with pytest.raises(SlotInUseError):
            second.start()


def test_an_instance_that_took_the_slot_during_a_restart_keeps_it(pg_server, dsn, unique, restartable):
    first_driver = restart_driver(unique)
    first = Client(database_cnx=dsn, driver=first_driver)
    first.on(restartable)(lambda event: None)
    second_events = Recorder()
    second = Client(database_cnx=dsn, driver=restart_driver(unique))
    second.on(restartable, Operation.INSERT)(second_events)
    check = None
    try:
        first.start()
        # The driver's lock keeps the first client's reconnection waiting until the
        # second client has started, as a first client slower to come back would.
        with first_driver._query.lock:
            pg_server.restart()
            second.start()
        with pytest.raises(SlotInUseError, match="while this client was disconnected"):
            first.wait(30)
        first.close()  # and it leaves the second's slot and publication alone
        check = Database(dsn)
        insert(check, restartable, "the second streams on")
        assert second_events.wait(1)[0].new["title"] == "the second streams on"
        assert check.fetchall("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                              (f"flash_{unique}",)) == [(True,)]
        assert check.publications(f"pub_{unique}") == sorted(restart_driver(unique).config.publication_names)
    finally:
        first.close()
        second.close()
        if check is not None:
            check.close()


def test_a_lock_still_held_by_the_clients_own_broken_session_is_taken_back(make_client, make_table, db, unique):
    """A network failure can break the query connection on the client's side only: the
    server keeps the old session, and its lock, until it notices."""
    table = make_table()
    recorder = Recorder()
    client = make_client(slot=f"flash_{unique}")
    client.on(table, Operation.INSERT)(recorder)
    lock_holder = ("SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
                   " AND l.classid = %s::int4::oid AND l.objid = hashtext(%s)::oid")
    with client:
        old_pid = client.driver._query._conn.get_backend_pid()
        assert db.fetchone(lock_holder, (catalog.SLOT_LOCK, f"flash_{unique}")) == (old_pid,)
        descriptor = client.driver._query._conn.fileno()
        kept = os.dup(descriptor)  # the server's side stays open: it notices nothing
        ours, gone = socket.socketpair()
        os.dup2(ours.fileno(), descriptor)  # the client's side now reads end-of-file
        ours.close()
        gone.close()
        try:
            assert client.stats()["lag_bytes"] is None  # stats() never waits to reconnect
            client.on(make_table(), Operation.INSERT)(recorder)  # attach: the connection is opened again
            assert client.stats()["lag_bytes"] is not None
            new_pid = client.driver._query._conn.get_backend_pid()
            assert new_pid != old_pid
            assert db.fetchone(lock_holder, (catalog.SLOT_LOCK, f"flash_{unique}")) == (new_pid,)
            wait_for(lambda: db.fetchone("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (old_pid,)) is None,
                     what="the old session to be ended")
        finally:
            os.close(kept)
        insert(db, table, "still streaming")
        assert recorder.wait(1)[0].new["title"] == "still streaming"


# --- point 19: a failed start puts the replica identity back --------------------------------


def test_failed_start_puts_each_tables_replica_identity_back(make_table, db, unique):
    plain = make_table()
    indexed = make_table("id int NOT NULL, title text")
    index = f"{indexed}_id"
    db.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} (id)").format(sql.Identifier(index), sql.Identifier(indexed)))
    db.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
        sql.Identifier(indexed), sql.Identifier(index)))
    other = make_table()
    # A transaction open while the slot is created keeps the creation waiting past setup_timeout.
    blocker = Database(db.dsn)
    blocker.conn.autocommit = False
    insert(blocker, other, "open")
    try:
        client = Client(database_cnx=db.dsn, driver=Driver(DriverConfig(
            publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", setup_timeout=1)))
        client.on(plain)(lambda event: None)
        client.on(indexed)(lambda event: None)
        with pytest.raises(ConfigurationError, match="setup_timeout"):
            client.start()
    finally:
        blocker.conn.rollback()
        blocker.close()
    assert relreplident(db, plain) == "d"
    assert relreplident(db, indexed) == "i"
    assert db.fetchone("SELECT indisreplident FROM pg_index WHERE indexrelid = %s::regclass", (index,))[0] is True
    wait_for(lambda: db.slots(f"flash_{unique}") == [], what="the cancelled slot to go")
    assert db.publications(f"pub_{unique}") == []
