"""Client.backfill and ListenerConfig(backfill=True) on a real server: what API.md
promises of the handle, of read rows, and of what is left on the server."""

import threading

import pytest
from psycopg2 import sql

from flash_wal import (
    Client, ClientConfig, Condition, ConfigurationError, FlashError, Listener, Operation, ReadEvent,
)
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.database import confirmed_flush, wait_for_status_updates
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def fill(db, table, rows, columns="g, 't' || g, g %% 3"):
    db.execute(sql.SQL("INSERT INTO {} SELECT " + columns + " FROM generate_series(1, %s) g")
               .format(sql.Identifier(table)), (rows,))


def reading(client, table, operations=Operation.READ, **options):
    recorder = Recorder()
    listener = Listener(table=table, **options)
    listener.on(operations, recorder)
    client.attach(listener)
    return listener, recorder


def test_rows_in_key_order_with_fields_conditions_and_keys(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, title text, kind int")
    fill(db, table, 2_345)
    client = make_client()
    listener, recorder = reading(client, table, fields=["title"], conditions=[Condition("kind", 1)])
    with client:
        backfill = client.backfill(listener, chunk_size=100)
        assert client.backfill(listener) is backfill  # the running one, not another
        assert backfill.wait(timeout=60)
        events = list(recorder.events)
        assert backfill.done and backfill.state == "completed"
        assert backfill.rows == len(events)
        expected = [g for g in range(1, 2_346) if g % 3 == 1]
        assert [event.key for event in events] == [(g,) for g in expected]
        assert all(isinstance(event, ReadEvent) and event.operation is Operation.READ for event in events)
        assert events[0].new == {"title": "t1"}  # fields apply; the key whatever fields says
        assert events[0].xid is None and events[0].commit_time is None
        assert events[0].lsn == events[0].commit_lsn or events[0].lsn < events[0].commit_lsn
        assert [e.commit_lsn for e in events] == sorted(e.commit_lsn for e in events)
        stats = client.stats()["backfills"]
        assert stats == [dict(stats[0], table=f"public.{table}", rows=len(events), state="completed")]


def test_composite_key_and_types_as_in_the_stream(make_client, make_table, db):
    table = make_table("b text, a int, at timestamptz, doc jsonb, amount numeric, PRIMARY KEY (b, a)")
    db.execute(sql.SQL("INSERT INTO {} SELECT chr(65 + g % 5), g, '2026-01-02 03:04:05+00', "
                       "jsonb_build_object('g', g), g / 7.0 FROM generate_series(1, 300) g")
               .format(sql.Identifier(table)))
    client = make_client()
    listener, recorder = reading(client, table, Operation.READ | Operation.INSERT)
    with client:
        assert client.backfill(listener, chunk_size=7).wait(timeout=60)
        db.execute(sql.SQL("INSERT INTO {} VALUES ('Z', 1, '2026-01-02 03:04:05+00', '{{\"g\": 1}}', 1 / 7.0)")
                   .format(sql.Identifier(table)))
        events = recorder.wait(301)
    reads, (insert,) = events[:300], events[300:]
    assert [e.key for e in reads] == sorted(e.key for e in reads)  # (b, a) order, not column order
    assert len({e.key for e in reads}) == 300
    sample = reads[0].new
    assert {k: type(v) for k, v in sample.items()} == {k: type(v) for k, v in insert.new.items()}
    assert sample["at"] == insert.new["at"] and sample["at"].tzinfo is not None


def test_table_without_key_is_a_configuration_error(make_client, make_table, db):
    table = make_table("n int, note text")
    client = make_client()
    listener, _ = reading(client, table)
    with client:
        with pytest.raises(ConfigurationError, match="no key"):
            client.backfill(listener)
        assert client.stats()["backfills"] == []
        with pytest.raises(ConfigurationError, match="chunk_size"):
            client.backfill(listener, chunk_size=0)


def test_backfill_before_start_and_unattached(make_client, make_table):
    table = make_table()
    client = make_client()
    listener = Listener(table=table)
    with pytest.raises(FlashError, match="start"):
        client.backfill(listener)
    with client:
        with pytest.raises(ConfigurationError, match="attach"):
            client.backfill(listener)


def test_backfill_true_at_start_and_on_attach_several_at_once(make_client, make_table, db):
    first, second = make_table(), make_table()
    fill(db, first, 6_000, "g, 'x', 'y'")
    fill(db, second, 5_500, "g, 'x', 'y'")
    client = make_client()
    _, on_first = reading(client, first, backfill=True)
    with client:
        _, on_second = reading(client, second, backfill=True)
        on_first.wait(6_000)
        on_second.wait(5_500)
        wait_for(lambda: [b["state"] for b in client.stats()["backfills"]] == ["completed"] * 2,
                 what="both backfills completed")
    assert len(on_first) == 6_000 and len(on_second) == 5_500


def test_detach_mid_backfill_cancels_it_and_cancel_stops_reading(make_client, make_table, db):
    table = make_table()
    fill(db, table, 20_000, "g, 'x', 'y'")
    client = make_client(max_queued_events=1_000)  # back-pressure keeps the readers close behind
    gates = {"detached": threading.Event(), "other": threading.Event()}
    seen = {"detached": [], "other": []}

    def slow(name):
        def callback(event):
            seen[name].append(event)
            gates[name].wait(10)
        return callback

    listener, other = Listener(table=table), Listener(table=table)
    listener.on(Operation.READ, slow("detached"))
    other.on(Operation.READ, slow("other"))
    client.attach(listener, other)
    with client:
        backfill = client.backfill(listener, chunk_size=50)
        other_backfill = client.backfill(other, chunk_size=50)
        wait_for(lambda: seen["detached"] and seen["other"], what="the first read rows")
        client.detach(listener)
        assert backfill.state == "cancelled" and not backfill.wait(0)
        gates["detached"].set()
        other_backfill.cancel()
        assert other_backfill.wait(0) is False and other_backfill.state == "cancelled"
        gates["other"].set()
        db.execute("SELECT pg_logical_emit_message(true, 'x', '')")  # the stream moves on
        wait_for(lambda: client.stats()["queue_depth"] == 0, what="nothing queued")
        assert len(seen["other"]) <= 1_000 + 2 * 50  # what was queued, and the chunk being merged
        assert client.stats()["backfills"][1]["state"] == "cancelled"
    assert len(seen["detached"]) == 1


def test_read_rows_are_acknowledged_after_their_callbacks(dsn, db, make_table, unique):
    table = make_table()
    fill(db, table, 500, "g, 'x', 'y'")
    slot = f"bfa_{unique}"
    driver = Driver(DriverConfig(replication_slot=slot, publication_slot_prefix=f"p_{slot}", durable=True,
                                 status_interval=1))
    client = Client(ClientConfig(database_cnx=dsn, driver=driver, shutdown_timeout=2))
    gate, blocked = threading.Event(), []

    def block_on_the_last(event):
        if event.key == (500,):
            blocked.append(event)
            gate.wait(30)

    listener = Listener(table=table)
    listener.on(Operation.READ, block_on_the_last)
    client.attach(listener)
    try:
        with client:
            backfill = client.backfill(listener, chunk_size=500)
            wait_for(lambda: blocked, what="the callback of the last row")
            db.execute("SELECT pg_logical_emit_message(true, 'later', '')")  # a transaction after the chunk
            wait_for_status_updates(db, slot, 3)
            assert confirmed_flush(db, slot) <= blocked[0].commit_lsn  # the chunk is not confirmed
            assert backfill.rows == 0 and not backfill.done
            gate.set()
            assert backfill.wait(30) and backfill.rows == 500
            wait_for(lambda: confirmed_flush(db, slot) > blocked[0].commit_lsn, what="the chunk confirmed")
    finally:
        gate.set()
        driver.drop(dsn)


def test_watermarks_never_reach_on_message_and_drop_removes_progress(dsn, db, make_table, unique):
    table = make_table()
    fill(db, table, 300, "g, 'x', 'y'")
    slot = f"bfm_{unique}"
    driver = Driver(DriverConfig(replication_slot=slot, publication_slot_prefix=f"p_{slot}", durable=True))
    client = Client(ClientConfig(database_cnx=dsn, driver=driver))
    messages = Recorder()
    client.on_message("")(messages)
    listener, recorder = reading(client, table)
    with client:
        assert client.backfill(listener, chunk_size=40).wait(30)
        db.execute("SELECT pg_logical_emit_message(true, 'app', 'hello')")
        messages.wait(1)
    assert [m.prefix for m in messages.events] == ["app"]
    assert db.fetchone("SELECT count(*) FROM flash_wal.backfill_progress WHERE slot = %s", (slot,)) == (1,)
    driver.drop(dsn)
    if db.fetchone("SELECT to_regclass('flash_wal.backfill_progress') IS NOT NULL")[0]:  # other slots' rows
        assert db.fetchone("SELECT count(*) FROM flash_wal.backfill_progress WHERE slot = %s", (slot,)) == (0,)
    assert db.slots(slot) == []
