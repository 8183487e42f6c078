"""What the client does when its slot or publication is harmed behind its back."""

import threading

import pytest
from psycopg2 import sql

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig
from flash_wal.errors import ReplicationError, SlotInvalidatedError

from tests.support.publications import publication_of
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def insert(db, table, title):
    db.execute(sql.SQL("INSERT INTO {} (title) VALUES (%s)").format(sql.Identifier(table)), (title,))


def published_tables(db, publication):
    return {row[0] for row in db.fetchall(
        "SELECT tablename::text FROM pg_publication_tables WHERE pubname = %s", (publication,))}


def test_publication_dropped_while_streaming_is_restored_on_reconnect(make_client, make_table, db, unique):
    table, other = make_table(), make_table()
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(recorder)
    client.on(other, Operation.INSERT)(recorder)
    config = client.driver.config
    with client:
        insert(db, table, "before")
        recorder.wait(1)
        db.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication_of(config, Operation.INSERT))))
        db.terminate_walsender(config.replication_slot)
        wait_for(lambda: client.stats()["reconnects"] == 1 and client.stats()["state"] == "streaming",
                 what="the reconnect")
        assert published_tables(db, publication_of(config, Operation.INSERT)) == {table, other}
        insert(db, table, "after")
        insert(db, other, "other after")
        events = recorder.wait(3)
    # Two listeners: no order between them.
    assert sorted(e.new["title"] for e in events) == ["after", "before", "other after"]


def test_publication_dropped_with_changes_meanwhile_stops_the_client(make_client, make_table, db):
    """The server decodes the changes made while the publication was missing without
    it, and skips them (PostgreSQL 18, with a warning) or fails (before): either way
    the client stops with an error rather than going on past them."""
    table = make_table()
    recorder = Recorder()
    client = make_client(driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{table}", replication_slot=f"flash_{table}", status_interval=1)))
    client.on(table, Operation.INSERT)(recorder)
    config = client.driver.config
    with client:
        insert(db, table, "before")
        recorder.wait(1)
        # Acknowledged once its callback has returned, a moment after the recorder saw it.
        acked = wait_for(lambda: client.stats()["last_acked_lsn"], what="the first transaction acknowledged")
        db.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication_of(config, Operation.INSERT))))
        insert(db, table, "skipped by the server")
        with pytest.raises(ReplicationError, match="publication"):
            client.wait(20)
        assert client.stats()["state"] == "closed"
    assert [e.new["title"] for e in recorder.events] == ["before"]
    assert client.stats()["last_acked_lsn"] == acked


def test_table_taken_out_of_the_publication_stops_the_client(make_client, make_table, db):
    """No warning tells a table removed from the publication: the server just stops
    sending its changes, and cannot send them again. The client checks its publication
    at every status_interval and stops, naming the table, rather than go on as if
    nothing were missing."""
    table, other = make_table(), make_table()
    recorder = Recorder()
    driver = Driver(DriverConfig(publication_slot_prefix=f"pub_{table}", replication_slot=f"flash_{table}",
                                 status_interval=1, durable=True))
    client = make_client(driver=driver)
    client.on(table, Operation.INSERT)(recorder)
    client.on(other, Operation.INSERT)(recorder)
    config = client.driver.config
    with client:
        insert(db, table, "before")
        recorder.wait(1)
        db.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
            sql.Identifier(publication_of(config, Operation.INSERT)), sql.Identifier(table)))
        insert(db, table, "not sent")
        insert(db, other, "sent")
        with pytest.raises(ReplicationError, match=f"table public.{table} was removed from publication"):
            client.wait(20)
        assert client.stats()["state"] == "closed"
    assert "not sent" not in [e.new["title"] for e in recorder.events]
    driver.drop(db.dsn)


def test_durable_slot_whose_publication_was_dropped_is_a_clear_error(
        make_table, db, unique, server_version):
    if server_version >= 180000:
        pytest.skip("PostgreSQL 18 skips a missing publication instead of failing")
    table = make_table()
    driver = Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}",
                                 durable=True, reconnect_delay=0.05))
    client = Client(database_cnx=db.dsn, driver=driver)
    client.on(table, Operation.INSERT)(lambda event: None)
    try:
        with client:
            db.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication_of(driver.config, Operation.INSERT))))
            insert(db, table, "after the drop")
            with pytest.raises(ReplicationError, match="Drop the slot"):
                client.wait()
            assert client.stats()["reconnects"] == 0  # fatal: no retry loop
    finally:
        driver.drop(db.dsn)
    assert db.slots(f"flash_{unique}") == []


@pytest.fixture
def wal_keep_limit(pg_server, db):
    """max_slot_wal_keep_size = 1MB on the test server for one test."""
    if pg_server is None:
        pytest.skip("changes a server setting: needs the server the tests start themselves")
    db.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    db.execute("SELECT pg_reload_conf()")
    yield
    db.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
    db.execute("SELECT pg_reload_conf()")


def test_slot_invalidated_by_max_slot_wal_keep_size_is_fatal_and_typed(make_table, db, unique, wal_keep_limit):
    table = make_table()
    slot = f"flash_{unique}"

    def make_driver():
        return Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=slot,
                                   durable=True, reconnect_delay=0.05))

    release = threading.Event()
    client = Client(database_cnx=db.dsn, shutdown_timeout=0.1, driver=make_driver())
    # A callback that never returns: nothing is acknowledged, so the slot holds WAL back.
    client.on(table, Operation.INSERT)(lambda event: release.wait(60))
    try:
        with client:
            insert(db, table, "held back")
            # Each round fills a WAL segment and lets a checkpoint remove what the slot needs.
            for _ in range(5):
                insert(db, table, "more")
                db.execute("SELECT pg_switch_wal()")
                db.execute("CHECKPOINT")
                if db.fetchone("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,)) == ("lost",):
                    break
            with pytest.raises(SlotInvalidatedError, match="max_slot_wal_keep_size"):
                client.wait()
            stats = client.stats()
            assert stats["state"] == "closed"
            assert stats["reconnects"] == 0
    finally:
        release.set()

    again = Client(database_cnx=db.dsn, driver=make_driver())
    again.on(table, Operation.INSERT)(Recorder())
    with pytest.raises(SlotInvalidatedError, match="Drop it"):
        again.start()
    make_driver().drop(db.dsn)
    assert db.slots(slot) == []
    assert db.publications(f"pub_{unique}") == []
