"""A lost connection while a transaction is being received, and close() while a
reconnect waits: what was handed out before the loss is acknowledged only once its
callbacks ran, and close() never waits on the server."""

import threading
import time

from psycopg2 import sql

from flash_wal import Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig
from tests.support.database import Database, confirmed_flush, wait_for_status_updates
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for

ROWS = 200_000  # megabytes: more than the sockets hold, so a walsender ended mid-send cuts it


def test_a_durable_transaction_cut_by_a_lost_connection_is_delivered_once_and_acknowledged_after(
    make_client, make_table, db, unique,
):
    # The server sends the cut transaction again, whole: the rows already delivered are
    # not delivered twice (before the fix: all of them were), and it is confirmed only
    # once its last callback returned.
    table = make_table()
    slot = f"flash_{unique}"
    driver = Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=slot,
                                 durable=True, status_interval=1))
    client = make_client(driver=driver, max_queued_events=100)
    release, last_reached, seen = threading.Event(), [], []

    @client.on(table, Operation.INSERT)
    def slow(event):
        seen.append(event.new["id"])
        if event.new["title"] == "last":
            last_reached.append(event)
            release.wait(30)

    try:
        client.start()
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT CASE WHEN i = %s THEN 'last' ELSE 'x' END"
                           " FROM generate_series(1, %s) i").format(sql.Identifier(table)), (ROWS, ROWS))
        # Megabytes: the server is still sending the transaction when its walsender
        # goes, so the client is in the middle of it, filling a batch.
        wait_for(lambda: len(seen) > 50, what="the first rows delivered")
        db.terminate_walsender(slot)
        wait_for(lambda: last_reached, timeout=30, what="the transaction's last row reaching its callback")
        commit_lsn = last_reached[0].commit_lsn
        wait_for_status_updates(db, slot)  # after the reconnect: chances to confirm, taken or not
        assert confirmed_flush(db, slot) <= commit_lsn, "confirmed while a callback of it still runs"
        release.set()
        wait_for(lambda: confirmed_flush(db, slot) > commit_lsn, what="the transaction confirmed once done")
        assert len(seen) == len(set(seen)) == ROWS  # each row once
        assert client.stats()["reconnects"] == 1
    finally:
        release.set()
        client.close()
        driver.drop(db.dsn)


def test_the_first_transaction_after_a_reconnect_is_acknowledged_only_after_its_callbacks(
    make_client, make_table, db, unique,
):
    # Before the fix the batch being filled when the connection went survived it, with
    # its transaction: the first small transaction of the next session joined that
    # batch, had nothing pending of its own, and was acknowledged before it ran.
    table = make_table()
    slot = f"flash_{unique}"
    driver = Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=slot, status_interval=1))
    client = make_client(driver=driver, max_queued_events=100)
    release, blocked, seen = threading.Event(), [], []

    @client.on(table, Operation.INSERT)
    def slow(event):
        seen.append(event.new["id"])
        if event.new["title"] == "after":
            blocked.append(event)
            release.wait(30)

    try:
        client.start()
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, %s)").format(
            sql.Identifier(table)), (ROWS,))
        wait_for(lambda: len(seen) > 50, what="the first rows delivered")
        db.terminate_walsender(slot)  # mid-transaction: the new temporary slot starts after it
        wait_for(lambda: client.stats()["reconnects"] == 1 and db.streams(slot), what="streaming again")
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('after')").format(sql.Identifier(table)))
        wait_for(lambda: blocked, timeout=30, what="the next transaction's callback")
        wait_for_status_updates(db, slot)
        assert confirmed_flush(db, slot) <= blocked[0].commit_lsn, "confirmed while its callback still runs"
        release.set()
        wait_for(lambda: confirmed_flush(db, slot) > blocked[0].commit_lsn, what="confirmed once done")
    finally:
        release.set()


def test_close_returns_while_a_reconnect_waits_for_an_open_transaction(make_client, make_table, db):
    # A temporary slot is made again on reconnect, and making a slot waits for every
    # transaction open at that moment: close() must cancel that wait, not sit in it.
    table, other = make_table(), make_table()
    client = make_client(shutdown_timeout=2)
    client.on(table, Operation.INSERT)(Recorder())
    client.start()
    blocker = Database(db.dsn)
    blocker.conn.autocommit = False
    blocker.execute(sql.SQL("INSERT INTO {} (title) VALUES ('open')").format(sql.Identifier(other)))
    try:
        db.terminate_walsender(client.driver.config.replication_slot)
        wait_for(lambda: db.fetchone("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
                                     )[0] > 0, what="the slot's creation waiting for the open transaction")
        closer = threading.Thread(target=client.close, daemon=True)
        began = time.monotonic()
        closer.start()
        closer.join(20)
        assert not closer.is_alive(), "close() still waiting after 20 s"
        assert time.monotonic() - began < 10
    finally:
        blocker.conn.rollback()
        blocker.close()
