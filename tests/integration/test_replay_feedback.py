"""A committed streamed transaction whose replay lasts several times the server's
wal_sender_timeout: status updates keep the session alive, nothing is sent twice."""

import threading

import pytest

import psycopg2.extensions
from psycopg2 import sql

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig


@pytest.mark.parametrize("rows, work, max_queued", [
    (300_000, 0, 10_000_000),  # the thread replays without a pause: nothing read for seconds
    (60_000, 3000, 1_000),  # the thread replays and waits for the callbacks in turn
], ids=["replaying", "waiting-for-room"])
def test_a_replay_longer_than_wal_sender_timeout_keeps_its_session(dsn, make_table, db, unique, rows, work, max_queued):
    table = make_table()
    params = psycopg2.extensions.parse_dsn(dsn)
    # The walsender serving this client ends a session silent for 1 s, and streams
    # any transaction past 64 kB.
    params["options"] = "-c wal_sender_timeout=1000 -c logical_decoding_work_mem=64kB"
    short_timeout = psycopg2.extensions.make_dsn(**params)
    seen, lock, done = [], threading.Lock(), threading.Event()

    def slow(event):
        sum(range(work))  # a callback with some work: the replay takes seconds
        with lock:
            seen.append(event.new["id"])
            if len(seen) == rows:
                done.set()

    driver = Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}",
                                 use_streaming=True))
    client = Client(database_cnx=short_timeout, driver=driver, max_queued_events=max_queued)
    client.on(table, Operation.INSERT)(slow)
    with client:
        pid = db.fetchone("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                          (f"flash_{unique}",))[0]
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, %s)").format(
            sql.Identifier(table)), (rows,))
        assert done.wait(120), f"{len(seen)} of {rows} rows"
        assert client.stats()["reconnects"] == 0
        assert db.fetchone("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                           (f"flash_{unique}",))[0] == pid  # the same walsender throughout
    assert sorted(seen) == list(range(1, rows + 1))
