"""The replication wire against a real walsender: the last status update of a session
is read by the server even when the session ends while the server is still sending."""

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from flash_wal.drivers.wal_logical.wire import ReplicationWire

from tests.support.waiting import wait_for


def test_ending_the_stream_gets_the_last_update_read_by_a_walsender_busy_sending(dsn, make_table, db, unique):
    # A socket closed on unread frames resets the connection; a walsender blocked on a
    # full socket then fails its next write and exits without reading what came before
    # it. Closing right after the update, as here, loses it most times without end().
    table = make_table()
    publication, slot = f"pub_{unique}", f"slot_{unique}"
    db.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(publication), sql.Identifier(table)))
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT repeat('x', 200) FROM generate_series(1, 20000)").format(
            sql.Identifier(table)))
        for round_number in range(8):
            conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
            try:
                conn.cursor().start_replication(
                    slot_name=slot, decode=False, options={"proto_version": "1", "publication_names": publication})
                wire = ReplicationWire(conn, lambda message: None)
                first = wait_for(wire.read, what="a frame")[0]
                # Far ahead of anything read: the server confirms what it is told.
                position = first + 1000 * (round_number + 1)
                wire.send_status(position, position)
                assert wire.end(5.0)
            finally:
                conn.close()
            confirmed = db.fetchone(
                "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0]
            assert confirmed == position, f"round {round_number}"
    finally:
        wait_for(lambda: not db.fetchone("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0],
                 what="the slot released")
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        db.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication)))
