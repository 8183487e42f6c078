"""What the server is told: a transaction is acknowledged only after its callbacks ran,
and an idle client lets the slot move on."""

import threading

from psycopg2 import sql

from flash_wal import Listener, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig
from flash_wal.drivers.wal_logical.catalog import protocol_version_for

from tests.support.publications import published_tables
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for
from tests.support.database import confirmed_flush


def fast_feedback_driver(name):
    return Driver(DriverConfig(publication_slot_prefix=f"pub_{name}", replication_slot=name, status_interval=1))




def feedback_since(db, slot, server_time):
    return db.fetchone(
        "SELECT reply_time > %s FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"
        " WHERE s.slot_name = %s",
        (server_time, slot),
    )[0]


def test_transaction_is_acknowledged_only_after_its_callbacks_return(make_client, make_table, db, unique):
    table = make_table()
    slot = f"flash_{unique}"
    started, release, finished = threading.Event(), threading.Event(), Recorder()

    def blocking(event):
        started.set()
        release.wait(30)
        finished(event)

    client = make_client(driver=fast_feedback_driver(slot))
    client.on(table, Operation.INSERT)(blocking)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('a'), ('b')").format(sql.Identifier(table)))
        assert started.wait(10)
        for _ in range(2):  # two status updates while the callback runs: the ack had its chances
            now = db.fetchone("SELECT clock_timestamp()")[0]
            wait_for(lambda: feedback_since(db, slot, now), what="a standby status update")
        blocked_at = confirmed_flush(db, slot)
        release.set()
        commit_lsn = finished.wait(2)[0].commit_lsn
        assert blocked_at <= commit_lsn  # not confirmed while the callback ran
        wait_for(lambda: confirmed_flush(db, slot) > commit_lsn, what="the transaction to be confirmed")
        assert client.stats()["last_acked_lsn"] > commit_lsn


def test_idle_client_does_not_hold_wal_back(make_client, make_table, db, unique):
    table, other = make_table(), make_table()
    slot = f"flash_{unique}"
    client = make_client(driver=fast_feedback_driver(slot))
    client.on(table)(lambda event: None)
    with client:
        for _ in range(3):
            db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('unlistened')").format(sql.Identifier(other)))
        target = db.fetchone("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0]
        wait_for(lambda: confirmed_flush(db, slot) >= target, what="the slot to move past unrelated WAL")


def test_unbounded_parallelism(make_client, make_table, db):
    table = make_table()
    running, release, done = [0], threading.Event(), Recorder()
    lock = threading.Lock()

    def callback(event):
        with lock:
            running[0] += 1
        release.wait(30)
        done(event)

    listener = Listener(table=table, max_parallel=-1)
    listener.on(Operation.INSERT, callback)
    client = make_client()
    client.attach(listener)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 12)").format(sql.Identifier(table)))
        wait_for(lambda: running[0] == 12, what="all twelve callbacks running at once")
        release.set()
        done.wait(12)


def test_highest_protocol_version_is_used(make_client, make_table, server_version):
    table = make_table()
    client = make_client()
    client.on(table)(lambda event: None)
    with client:
        assert client.driver.protocol_version == protocol_version_for(server_version)
    assert [protocol_version_for(v) for v in (100000, 130012, 140000, 150004, 160000, 180006)] == [1, 1, 2, 3, 4, 4]


def test_detach_before_start(make_client, make_table, db):
    kept_table, dropped_table = make_table(), make_table()
    kept, dropped = Listener(table=kept_table), Listener(table=dropped_table)
    recorder = Recorder()
    kept.on(Operation.INSERT, recorder)
    dropped.on(Operation.INSERT, recorder)
    client = make_client()
    client.attach(kept, dropped)
    client.detach(dropped)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('no')").format(sql.Identifier(dropped_table)))
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('yes')").format(sql.Identifier(kept_table)))
        recorder.wait(1)
        tables = published_tables(db, client.driver.config)
    assert [e.new["title"] for e in recorder.events] == ["yes"]
    assert tables == [kept_table]
