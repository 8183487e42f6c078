"""close() whatever the client is doing, and stats() that never waits or raises."""

import threading
import time

import psycopg2
import pytest
from psycopg2 import sql

from flash_wal import Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.waiting import wait_for
from tests.support.database import confirmed_flush


def insert(db, table, count):
    db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, %s)").format(
        sql.Identifier(table)), (count,))




def test_close_from_a_callback_returns_at_once_and_stops_after_it(make_client, make_table, db, unique):
    table = make_table()
    slot = f"flash_{unique}"
    driver = Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=slot, durable=True))
    client = make_client(driver=driver, shutdown_timeout=10)
    calls, lock = [], threading.Lock()
    closed_at, close_took = [], []

    @client.on(table, Operation.INSERT)
    def callback(event):
        with lock:
            calls.append((time.monotonic(), event))
        if event.new["title"] == "close":
            began = time.monotonic()
            client.close()
            close_took.append(time.monotonic() - began)
            closed_at.append(time.monotonic())

    try:
        client.start()
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('close')").format(sql.Identifier(table)))
        insert(db, table, 500)  # queued behind it
        assert client.wait(15)  # the client stopped once that callback returned
        assert close_took[0] < 1.0, close_took
        assert [e.new["title"] for _, e in calls] == ["close"]  # nothing started after close()
        closing_txn = calls[0][1]
        # Its transaction was acknowledged: the slot moved past its commit.
        wait_for(lambda: confirmed_flush(db, slot) > closing_txn.commit_lsn, what="its transaction confirmed")
    finally:
        client.close()
        driver.drop(db.dsn)


def test_no_callback_starts_after_close_returned(make_client, make_table, db):
    table = make_table()
    client = make_client(shutdown_timeout=0.5)
    starts = []

    @client.on(table, Operation.INSERT)
    def slow(event):
        starts.append(time.monotonic())
        time.sleep(0.05)

    client.start()
    insert(db, table, 200)
    wait_for(lambda: client.stats()["queue_depth"] > 100, what="events queued")
    client.close()
    closed_at = time.monotonic()
    # Every task still queued is gone through (dropped, not run) before this holds.
    wait_for(lambda: client.stats()["queue_depth"] == 0, what="the queue to be emptied")
    assert starts and max(starts) < closed_at
    assert len(starts) < 200


def test_stats_answer_at_once_while_the_query_connection_is_busy(make_client, make_table):
    client = make_client()
    client.on(make_table())(lambda event: None)
    with client:
        with client.driver._query.lock:  # an attach or a check holds the query connection
            began = time.monotonic()
            figures = client.stats()
            took = time.monotonic() - began
        assert took < 1.0
        assert figures["lag_bytes"] is None and figures["state"] == "streaming"
        assert client.stats()["lag_bytes"] is not None


def test_stats_never_raise_while_the_server_is_away(pg_server, make_client, make_table, db):
    if pg_server is None:
        pytest.skip("needs a server the tests start themselves")
    client = make_client()
    client.on(make_table())(lambda event: None)
    with client:
        samples, errors, done = [], [], threading.Event()

        def sample():
            while not done.is_set():
                began = time.monotonic()
                try:
                    figures = client.stats()
                except BaseException as exc:  # stats() must never raise
                    errors.append(exc)
                    return
                samples.append((time.monotonic() - began, figures))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            pg_server.restart()
            wait_for(lambda: client.stats()["state"] == "streaming" and client.stats()["reconnects"] == 1,
                     timeout=30, what="the client streaming again")
        finally:
            done.set()
            sampler.join(10)
        assert errors == []
        assert max(took for took, _ in samples) < 1.5
        assert any(figures["lag_bytes"] is None for _, figures in samples)  # unknown while away
    db.conn.close()  # it went with the restart
    db.conn = psycopg2.connect(db.dsn)
    db.conn.autocommit = True


def test_a_transaction_read_after_close_from_a_callback_comes_again_at_the_next_start(
    make_client, make_table, db, unique,
):
    # The replication thread reads on to the Commit of the transaction it is in when a
    # callback calls close(); what it skips then must not be acknowledged.
    table = make_table()
    ident = sql.Identifier(table)
    db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'old' FROM generate_series(1, 20000)").format(ident))
    config = DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", durable=True)
    first = make_client(driver=Driver(config))
    seen = []

    @first.on(table, Operation.INSERT)
    def close_while_the_next_transaction_is_read(event):
        seen.append(event.new["title"])
        if event.new["title"] == "close":
            translator = first.driver._thread._translator
            wait_for(lambda: translator.txn is not None and translator.txn.commit_lsn > event.commit_lsn,
                     what="the next transaction being read")
            first.close()

    first.start()
    db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('close')").format(ident))
    # One query string, one transaction: 20,000 UPDATEs (no callback) and then an INSERT.
    db.execute(sql.SQL("UPDATE {0} SET status = 'u'; INSERT INTO {0} (title) VALUES ('last')").format(ident))
    assert first.wait(15)
    assert seen == ["close"]
    second_driver = Driver(config)
    second = make_client(driver=second_driver)
    second.on(table, Operation.INSERT)(lambda event: seen.append(event.new["title"]))
    try:
        with second:
            wait_for(lambda: "last" in seen, what="the row read after close() delivered by the next start")
    finally:
        second_driver.drop(db.dsn)


def test_the_acknowledgement_sent_at_close_reaches_the_server_while_it_is_sending(make_client, make_table, db, unique):
    # A backlog keeps the walsender writing when close() sends its last update: closing
    # the socket on unread frames resets the connection, and the walsender would exit
    # on its next write without reading that update (about one close in five).
    table = make_table()
    backlog = sql.SQL(
        "DO $$ BEGIN FOR i IN 1..3000 LOOP INSERT INTO {} (title) VALUES ('x'); COMMIT; END LOOP; END $$"
    ).format(sql.Identifier(table))
    for round_number in range(10):
        name = f"flash_{unique}_{round_number}"
        driver = Driver(DriverConfig(publication_slot_prefix=f"pub_{name}", replication_slot=name, durable=True))
        client = make_client(driver=driver, max_queued_events=50)
        seen = []
        client.on(table, Operation.INSERT)(seen.append)
        try:
            client.start()
            db.execute(backlog)
            wait_for(lambda: len(seen) > 500, what="a part of the backlog delivered")
            client.close()
            acked = client.stats()["last_acked_lsn"]
            assert acked > 0
            wait_for(lambda: confirmed_flush(db, name) >= acked, timeout=5,
                     what=f"close()'s acknowledgement recorded by the server (round {round_number})")
        finally:
            driver.drop(db.dsn)
