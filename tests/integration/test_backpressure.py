"""Slow callbacks: reading pauses at max_queued_events, and the server is kept answered."""

import threading

import psycopg2.extensions
from psycopg2 import sql

from flash_wal import Client, Operation
from flash_wal.dispatcher.routes import BATCH_SIZE
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.recorder import Recorder
from tests.support.waiting import wait_for

WAL_SENDER_TIMEOUT = 2.0


def test_callback_blocking_three_wal_sender_timeouts_causes_no_disconnect(make_table, db, unique):
    table = make_table()
    dsn = psycopg2.extensions.make_dsn(db.dsn, options=f"-c wal_sender_timeout={int(WAL_SENDER_TIMEOUT * 1000)}ms")
    slot = f"flash_{unique}"
    limit = 10
    client = Client(
        database_cnx=dsn, max_queued_events=limit, shutdown_timeout=5,
        # status_interval stays at its default, 10 s: longer than the server's timeout
        driver=Driver(DriverConfig(publication_slot_prefix=f"pub_{slot}", replication_slot=slot)),
    )
    release, blocked, done = threading.Event(), threading.Event(), Recorder()
    depths = []

    def slow(event):
        if not blocked.is_set():
            blocked.set()
            release.wait(3 * WAL_SENDER_TIMEOUT + 1)
        done(event)

    client.on(table, Operation.INSERT)(slow)
    with client:
        pid = db.fetchone("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0]
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 2000)").format(sql.Identifier(table)))
        assert blocked.wait(10)
        stop = threading.Timer(3 * WAL_SENDER_TIMEOUT, release.set)
        stop.start()
        while not release.is_set():
            depths.append(client.stats()["queue_depth"])
            release.wait(0.05)
        events = done.wait(2000, timeout=30)
        assert client.wait(timeout=0) is False  # no fatal error: still streaming
        assert db.fetchone("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))[0] == pid
    assert [e.new["id"] for e in events] == list(range(1, 2001))
    assert max(depths) <= limit + BATCH_SIZE  # reading paused instead of queueing everything


def test_reading_pauses_at_max_queued_bytes_whatever_the_event_count(make_table, db, unique):
    table = make_table()
    slot = f"flash_{unique}"
    limit, row_bytes, rows = 256 * 1024, 50_000, 200  # 10 MB of rows, 40 times the bound
    client = Client(
        database_cnx=db.dsn, max_queued_bytes=limit, shutdown_timeout=5,  # max_queued_events stays 10,000
        driver=Driver(DriverConfig(publication_slot_prefix=f"pub_{slot}", replication_slot=slot)),
    )
    release, blocked, done = threading.Event(), threading.Event(), Recorder()
    held = []

    def slow(event):
        if not blocked.is_set():
            blocked.set()
            release.wait(30)
        done(event)

    client.on(table, Operation.INSERT)(slow)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT repeat('x', %s) FROM generate_series(1, %s)").format(
            sql.Identifier(table)), (row_bytes, rows))
        assert blocked.wait(10)
        # Reading goes on until the bound is reached, then waits: the queue stops growing.
        wait_for(lambda: client.stats()["queued_bytes"] >= limit, timeout=10)
        for _ in range(20):
            stats = client.stats()
            held.append((stats["queued_bytes"], stats["queue_depth"]))
            release.wait(0.05)
        release.set()
        events = done.wait(rows, timeout=30)
        assert client.stats()["queued_bytes"] == 0
    assert [e.new["id"] for e in events] == list(range(1, rows + 1))
    assert all(len(e.new["title"]) == row_bytes for e in events)
    # At most the bound, one early hand-off (a sixteenth of it) and the row that crossed it.
    assert max(size for size, _ in held) <= limit + limit // 16 + 2 * row_bytes
    assert max(depth for _, depth in held) < rows // 4
