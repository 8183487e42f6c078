"""Faults around streamed transactions (use_streaming=True) of a durable client: a
SIGKILL while a streamed transaction's callbacks run, a SIGKILL after a keepalive that
followed a streamed block, the server restarted while a committed streamed transaction
is replayed. Nothing committed may be lost, and the slot's confirmed position, read
from pg_replication_slots while a callback blocks, never passes that callback's
transaction."""

import os
import signal
import threading
import time

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import Client, Listener, Operation

from tests.support.database import Database, confirmed_flush, wait_for_status_updates
from tests.support.processes import ConsumerProcess
from tests.support.waiting import wait_for
from tests.support.consumer import RecordFile
from .test_faults import driver_for, names, report

#: Rows of the large transaction: with 64 kB of logical_decoding_work_mem, several blocks.
LARGE_ROWS = 3000


@pytest.fixture(autouse=True)
def needs_streaming(server_version):
    if server_version < 140000:
        pytest.skip("streaming of in-progress transactions needs PostgreSQL 14")


def insert_rows(db, table, first, count, width=10):
    db.execute(sql.SQL("INSERT INTO {} (id, title) SELECT i, repeat('x', %s) FROM generate_series(%s, %s) i").format(
        sql.Identifier(table)), (width, first, first + count - 1))


def open_transaction(dsn):
    writer = Database(dsn)
    writer.conn.autocommit = False
    return writer


def consumer_for(db, table, unique, record, *options):
    slot, prefix = names(unique)
    consumer = ConsumerProcess(db.dsn, table, slot, prefix, "--durable", "--streaming", "--status-interval", "1",
                               "--record", record.path, *options)
    consumer.wait_line("streaming")
    return consumer


def drain(db, table, unique, record, expected):
    """A consumer that runs until every id in ``expected`` was recorded; returns the ids missing."""
    consumer = consumer_for(db, table, unique, record)
    marker = max(expected) + 1
    insert_rows(db, table, marker, 1)  # everything committed before it comes first
    try:
        wait_for(lambda: marker in record.values(), timeout=60, what="the marker row")
    finally:
        consumer.proc.send_signal(signal.SIGTERM)
    assert consumer.wait_exit() == 0, consumer.output
    return sorted(set(expected) - set(record.values()))


def blocked_line(consumer):
    _, value, commit_lsn = consumer.wait_output("blocked ").split()
    return int(value), int(commit_lsn)


def test_killed_while_a_streamed_transactions_callbacks_run(db, make_table, unique, tmp_path):
    table = make_table("id int PRIMARY KEY, title text")
    slot, _ = names(unique)
    record = RecordFile(str(tmp_path / "record"))
    blocked_id = 1000 + LARGE_ROWS // 2
    consumer = consumer_for(db, table, unique, record, f"--block-at={blocked_id}")
    large = open_transaction(db.dsn)
    try:
        insert_rows(large, table, 1000, LARGE_ROWS // 2)
        insert_rows(db, table, 1, 5)  # small transactions while the large one is streamed
        insert_rows(large, table, 1000 + LARGE_ROWS // 2, LARGE_ROWS - LARGE_ROWS // 2)
        large.conn.commit()
        insert_rows(db, table, 6, 5)
        blocked, blocked_commit = blocked_line(consumer)
        assert blocked == blocked_id
        wait_for_status_updates(db, slot)
        confirmed_while_blocked = confirmed_flush(db, slot)
        consumer.kill()
        expected = list(range(1, 11)) + list(range(1000, 1000 + LARGE_ROWS))
        lost = drain(db, table, unique, record, expected)
    finally:
        large.close()
        consumer.kill()
        driver_for(unique, durable=True).drop(db.dsn)
    assert lost == [], f"{len(lost)} rows lost after a SIGKILL during a streamed transaction's callbacks: {lost[:10]}"
    assert confirmed_while_blocked <= blocked_commit, (
        f"confirmed_flush_lsn {confirmed_while_blocked} passed the commit {blocked_commit} of the transaction "
        "whose callback was blocked")


def test_keepalive_after_a_streamed_block_confirms_no_transaction_in_flight(db, make_table, unique, tmp_path):
    """psycopg2 answers a keepalive by confirming the server's WAL end when the flush
    position it was given is at or past the start of the last frame read; a streamed
    block of a transaction that began long ago starts before positions already
    confirmed. The block here holds only changes older than the confirmed position:
    the large transaction wrote them before ``first`` committed, and the server
    streams them when a third transaction fills logical_decoding_work_mem."""
    table = make_table("id int PRIMARY KEY, title text")
    slot, _ = names(unique)
    record = RecordFile(str(tmp_path / "record"))
    consumer = consumer_for(db, table, unique, record, "--block-at=2")
    large, filler = open_transaction(db.dsn), open_transaction(db.dsn)
    try:
        # About 50 kB of changes in the server's buffer: under the 64 kB, so kept there.
        insert_rows(large, table, 1000, 40, width=1000)
        insert_rows(db, table, 1, 1)
        first_commit = wait_for(lambda: next((lsn for _, _, value, lsn in record.read() if value == 1), None),
                                what="the first small transaction")
        wait_for(lambda: confirmed_flush(db, slot) > first_commit, what="the first small transaction confirmed")
        insert_rows(db, table, 2, 1)  # its callback blocks
        _, blocked_commit = blocked_line(consumer)
        for start in range(2000, 2400, 20):  # until the large transaction, the largest, is streamed
            insert_rows(filler, table, start, 20)
        wait_for_status_updates(db, slot, 3)
        confirmed_while_blocked = confirmed_flush(db, slot)
        consumer.kill()
        large.conn.commit()
        filler.conn.commit()
        expected = [1, 2] + list(range(1000, 1040)) + list(range(2000, 2400))
        lost = drain(db, table, unique, record, expected)
    finally:
        large.close()
        filler.close()
        consumer.kill()
        driver_for(unique, durable=True).drop(db.dsn)
    assert confirmed_while_blocked <= blocked_commit, (
        f"confirmed_flush_lsn {confirmed_while_blocked} passed the commit {blocked_commit} of the transaction "
        "whose callback was blocked, after a keepalive that followed a streamed block")
    assert lost == [], f"{len(lost)} rows lost after a SIGKILL: {lost[:10]}"


def _accepts_connections(dsn):
    try:
        psycopg2.connect(dsn, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


@pytest.mark.parametrize("shutdown", ["fast", "immediate"])
def test_server_restarted_while_a_streamed_transaction_is_replayed(pg_server, dsn, unique, capsys, shutdown):
    """``fast``: pg_ctl stop -m fast, which waits for the walsender to have its sent
    WAL confirmed; ``immediate`` (SIGQUIT to the postmaster): a crash, after which the
    slot is back where it was last saved, while a callback of the replay blocks."""
    if pg_server is None:
        pytest.skip("needs a server the tests start themselves")
    table = f"replay_{unique}"
    setup = Database(dsn)
    setup.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text)").format(sql.Identifier(table)))
    setup.close()
    slot, _ = names(unique)
    blocked_id = 1000 + LARGE_ROWS // 4
    seen, lock = [], threading.Lock()
    reached, release = threading.Event(), threading.Event()

    def remember(event):
        if event.new["id"] == blocked_id and not reached.is_set():
            reached.set()
            release.wait(60)
        with lock:
            seen.append((event.new["id"], event.commit_lsn))

    listener = Listener(table=table, max_parallel=1)
    listener.on(Operation.INSERT, remember)
    # A small queue: the replay waits for room behind the blocked callback, mid-transaction.
    client = Client(database_cnx=psycopg2.extensions.make_dsn(dsn, options="-c logical_decoding_work_mem=64kB"),
                    driver=driver_for(unique, durable=True, use_streaming=True, status_interval=1),
                    max_queued_events=100, shutdown_timeout=5)
    client.attach(listener)
    restarting = None
    try:
        with client:
            writer = Database(dsn)
            insert_rows(writer, table, 1, 5)
            large = open_transaction(dsn)
            insert_rows(large, table, 1000, LARGE_ROWS)
            large.conn.commit()
            large.close()
            writer.close()
            assert reached.wait(30), "the large transaction's callbacks did not start"
            wait_for(lambda: client.stats()["queue_depth"] >= 100, what="the replay to wait for room")
            began = time.monotonic()
            # A fast shutdown waits for the client to confirm what it was sent; so the
            # callback goes on once the server has begun to shut down.
            if shutdown == "immediate":
                os.kill(pg_server.pid, signal.SIGQUIT)
                wait_for(lambda: not _accepts_connections(dsn), timeout=30, what="the server to stop")
            restarting = threading.Thread(target=pg_server.restart, daemon=True)
            restarting.start()
            if shutdown == "fast":
                wait_for(lambda: not _accepts_connections(dsn), timeout=30, what="the server to shut down")
                release.set()
            restarting.join(90)
            release.set()
            assert not restarting.is_alive(), "the server did not restart"
            server_back = time.monotonic() - began
            wait_for(lambda: client.stats()["reconnects"] >= 1, timeout=60, what="the reconnect")
            reconnected = time.monotonic() - began
            writer = Database(dsn)
            insert_rows(writer, table, 10, 5)
            writer.close()
            expected = set(range(1, 6)) | set(range(10, 15)) | set(range(1000, 1000 + LARGE_ROWS))
            wait_for(lambda: {i for i, _ in seen} >= expected, timeout=60, what="every row")
            check = Database(dsn)
            streams = wait_for(lambda: check.streams(slot), what="the client streaming again")
            check.close()
    finally:
        release.set()
        if restarting is not None:
            restarting.join(90)
        cleanup = Database(dsn)
        cleanup.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        cleanup.close()
        driver_for(unique, durable=True).drop(dsn)
    ids = [i for i, _ in seen]
    duplicates = len(ids) - len(set(ids))
    report(capsys, f"server restarted ({shutdown}) during the replay of a {LARGE_ROWS}-row streamed transaction: lost 0, "
                   f"duplicates in the same process {duplicates}; server back after {server_back:.2f} s, "
                   f"client reconnected {reconnected:.2f} s after the restart began")
    assert streams
    assert duplicates == 0, f"{duplicates} rows delivered twice in the same process after the server restarted"
    lsns = [lsn for _, lsn in seen]
    assert lsns == sorted(lsns), "commit_lsn went back within the process after the server restarted"
