"""A listened table dropped or renamed while the client runs: its listeners are
detached with a WARNING, the others go on, and there is no reconnect loop."""

import logging

import pytest
from psycopg2 import sql

from flash_wal import Listener, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def insert(db, table, title):
    db.execute(sql.SQL("INSERT INTO {} (title) VALUES (%s)").format(sql.Identifier(table)), (title,))


@pytest.mark.parametrize("harm", ["drop", "rename"])
def test_a_table_gone_detaches_its_listener_and_the_others_go_on(make_client, make_table, db, unique, caplog, harm):
    gone_table, kept_table, later_table = make_table(), make_table(), make_table()
    gone, kept = Listener(table=gone_table), Listener(table=kept_table)
    gone_events, kept_events, later_events = Recorder(), Recorder(), Recorder()
    gone.on(Operation.INSERT, gone_events)
    kept.on(Operation.INSERT, kept_events)
    client = make_client(driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", status_interval=1)))
    client.attach(gone, kept)
    with caplog.at_level(logging.WARNING, logger="flash_wal"), client:
        insert(db, gone_table, "before")
        gone_events.wait(1)
        if harm == "drop":
            db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(gone_table)))
        else:
            db.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(gone_table), sql.Identifier(gone_table + "_renamed")))
        insert(db, kept_table, "kept")
        kept_events.wait(1)
        wait_for(lambda: gone not in client.listeners, what="the listener of the gone table to be detached")
        assert f"table public.{gone_table} was dropped or renamed" in caplog.text
        if harm == "rename":
            insert(db, gone_table + "_renamed", "after the rename")
        # Attach keeps working, and so does the stream after a lost connection.
        client.on(later_table, Operation.INSERT)(later_events)
        db.terminate_walsender(client.driver.config.replication_slot)
        wait_for(lambda: client.stats()["reconnects"] == 1 and client.stats()["state"] == "streaming",
                 what="one reconnect")
        insert(db, later_table, "later")
        insert(db, kept_table, "kept again")
        later_events.wait(1)
        kept_events.wait(2)
        assert client.stats()["reconnects"] == 1
    assert [e.new["title"] for e in gone_events.events] == ["before"]
    if harm == "rename":
        db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(gone_table + "_renamed")))
