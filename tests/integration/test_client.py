"""Listener semantics end to end against the real server."""

import threading

import pytest
from psycopg2 import sql

from flash_wal import (
    UNCHANGED_TOAST,
    Client,
    Condition,
    ConfigurationError,
    DeleteEvent,
    FlashError,
    InsertEvent,
    Listener,
    ListenerConfig,
    Operation,
    TruncateEvent,
    UpdateEvent,
)
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def insert(db, table, **values):
    columns = sql.SQL(", ").join(map(sql.Identifier, values))
    placeholders = sql.SQL(", ").join(sql.Placeholder() * len(values))
    db.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(sql.Identifier(table), columns, placeholders),
        list(values.values()),
    )


def test_every_operation_arrives_typed_with_transaction_metadata(make_client, make_table, db):
    table = make_table()
    recorder = Recorder()
    client = make_client()
    listener = Listener(table=table)
    listener.on(Operation.ALL, recorder)
    client.attach(listener)
    with client:
        insert(db, table, title="a", status="draft")
        db.execute(sql.SQL("UPDATE {} SET title = 'b'").format(sql.Identifier(table)))
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        db.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.Identifier(table)))
        events = recorder.wait(4)
    inserted, updated, deleted, truncated = events
    assert isinstance(inserted, InsertEvent) and inserted.new == {"id": 1, "title": "a", "status": "draft"}
    assert isinstance(updated, UpdateEvent)
    assert updated.old == {"id": 1, "title": "a", "status": "draft"}
    assert updated.new == {"id": 1, "title": "b", "status": "draft"}
    assert isinstance(deleted, DeleteEvent) and deleted.old == {"id": 1, "title": "b", "status": "draft"}
    assert isinstance(truncated, TruncateEvent)
    assert truncated.restart_identity and not truncated.cascade
    assert [e.operation for e in events] == [Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.TRUNCATE]
    for event in events:
        assert event.table == f"public.{table}"
        assert event.xid > 0
        assert event.commit_time.tzinfo is not None
        assert 0 < event.lsn <= event.commit_lsn
    commit_lsns = [e.commit_lsn for e in events]
    assert commit_lsns == sorted(commit_lsns) and len(set(commit_lsns)) == 4
    assert len({e.xid for e in events}) == 4


def test_events_of_one_transaction_share_commit_lsn_and_keep_order(make_client, make_table, db):
    table = make_table()
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(recorder)
    with client:
        db.execute(
            sql.SQL("INSERT INTO {} (title) SELECT 'row ' || i FROM generate_series(1, 600) i").format(
                sql.Identifier(table)
            )
        )
        events = recorder.wait(600)
    assert [e.new["id"] for e in events] == list(range(1, 601))
    assert len({(e.commit_lsn, e.xid) for e in events}) == 1
    lsns = [e.lsn for e in events]
    assert lsns == sorted(lsns)


def test_operations_filter_which_callbacks_run(make_client, make_table, db):
    table = make_table()
    inserts, deletes = Recorder(), Recorder()
    listener = Listener(table=table)
    assert listener.on(Operation.INSERT)(inserts) is inserts  # decorator returns the function
    assert listener.on(Operation.DELETE, deletes) is deletes  # direct form returns it too
    client = make_client()
    client.attach(listener)
    with client:
        insert(db, table, title="x")
        db.execute(sql.SQL("UPDATE {} SET title = 'y'").format(sql.Identifier(table)))
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        deletes.wait(1)
    assert [type(e) for e in inserts.events] == [InsertEvent]
    assert [type(e) for e in deletes.events] == [DeleteEvent]


def test_fields_limit_columns_and_skip_updates_that_change_none(make_client, make_table, db):
    table = make_table()
    recorder = Recorder()
    listener = Listener(ListenerConfig(table=table, fields=["id", "title"]))
    listener.on(Operation.ALL, recorder)
    client = make_client()
    client.attach(listener)
    with client:
        insert(db, table, title="a", status="draft")
        db.execute(sql.SQL("UPDATE {} SET status = 'published'").format(sql.Identifier(table)))
        db.execute(sql.SQL("UPDATE {} SET title = 'b'").format(sql.Identifier(table)))
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        events = recorder.wait(3)
    assert [type(e) for e in events] == [InsertEvent, UpdateEvent, DeleteEvent]
    assert events[0].new == {"id": 1, "title": "a"}
    assert events[1].old == {"id": 1, "title": "a"} and events[1].new == {"id": 1, "title": "b"}
    assert events[2].old == {"id": 1, "title": "b"}


def test_conditions_turn_updates_into_inserts_and_deletes(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, status text, flagged bool")
    recorder = Recorder()
    listener = Listener(table=table, conditions=[Condition("status", "published"), Condition("flagged", None)])
    listener.on(Operation.ALL, recorder)
    client = make_client()
    client.attach(listener)
    t = sql.Identifier(table)
    with client:
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'draft', NULL), (2, 'published', NULL), (3, 'published', true)").format(t))
        db.execute(sql.SQL("UPDATE {} SET status = 'published' WHERE id = 1").format(t))  # enters: insert
        db.execute(sql.SQL("UPDATE {} SET status = 'draft' WHERE id = 2").format(t))  # leaves: delete
        db.execute(sql.SQL("UPDATE {} SET status = 'archived' WHERE id = 3").format(t))  # never matched
        db.execute(sql.SQL("UPDATE {} SET status = 'published' WHERE id = 2").format(t))  # enters again
        db.execute(sql.SQL("UPDATE {} SET flagged = NULL WHERE id = 1").format(t))  # matches before and after
        db.execute(sql.SQL("DELETE FROM {} WHERE id IN (1, 3)").format(t))  # only 1 matched
        events = recorder.wait(6)
    summary = [(type(e).__name__, (e.new if isinstance(e, (InsertEvent, UpdateEvent)) else e.old)["id"]) for e in events]
    assert summary == [
        ("InsertEvent", 2),
        ("InsertEvent", 1),
        ("DeleteEvent", 2),
        ("InsertEvent", 2),
        ("UpdateEvent", 1),
        ("DeleteEvent", 1),
    ]


def test_client_on_decorator_and_listener_options(make_client, make_table, db):
    table = make_table()
    recorder = Recorder()
    client = make_client()

    @client.on(table, Operation.INSERT, fields=["title"])
    def handler(event):
        recorder(event)

    assert callable(handler) and handler.__name__ == "handler"
    with client:
        insert(db, table, title="hello")
        assert recorder.wait(1)[0].new == {"title": "hello"}


def test_off_and_on_at_runtime_take_effect_exactly(make_client, make_table, db):
    table = make_table()
    first, second = Recorder(), Recorder()
    listener = Listener(table=table)
    listener.on(Operation.INSERT, first)
    client = make_client()
    client.attach(listener)
    with client:
        insert(db, table, title="1")
        first.wait(1)
        listener.on(Operation.INSERT, second)
        listener.off(first)
        insert(db, table, title="2")
        second.wait(1)
        listener.on(Operation.INSERT, first)
        listener.on(Operation.DELETE, first)  # registering again adds the operation
        insert(db, table, title="3")
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        events = first.wait(5)  # "1", "3" and three deletes
        assert len(second.events) == 2  # same listener, so it ran before the deletes
    assert [e.new["title"] for e in events[:2]] == ["1", "3"]
    assert [type(e) for e in events[2:]] == [DeleteEvent] * 3
    assert [e.new["title"] for e in second.events] == ["2", "3"]
    with pytest.raises(ConfigurationError):
        listener.off(lambda event: None)


def test_attach_and_detach_after_start_lose_nothing_for_others(make_client, make_table, db):
    steady_table, late_table = make_table(), make_table()
    steady, late = Recorder(), Recorder()
    steady_listener = Listener(table=steady_table)
    steady_listener.on(Operation.INSERT, steady)
    late_listener = Listener(table=late_table)
    late_listener.on(Operation.INSERT, late)
    client = make_client()
    client.attach(steady_listener)
    stop = threading.Event()
    written = []

    def writer():
        i = 0
        while not stop.is_set() or i < 50:
            insert(db_writer, steady_table, title=str(i))
            written.append(i)
            i += 1

    from tests.support.database import Database

    db_writer = Database(db.dsn)
    with client:
        insert(db, late_table, title="before attach")
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            client.attach(late_listener)
            insert(db, late_table, title="after attach")
            late.wait(1)
            client.detach(late_listener)
            insert(db, late_table, title="after detach")
            client.attach(late_listener)
            insert(db, late_table, title="attached again")
            late.wait(2)
        finally:
            stop.set()
            thread.join()
            db_writer.close()
        steady.wait(len(written))
        insert(db, steady_table, title="sentinel")
        events = steady.wait(len(written) + 1)
    assert [e.new["title"] for e in events] == [str(i) for i in written] + ["sentinel"]
    assert [e.new["title"] for e in late.events] == ["after attach", "attached again"]
    client.detach(late_listener)
    with pytest.raises(ConfigurationError):
        client.detach(late_listener)


def test_max_parallel_runs_callbacks_concurrently_and_acks_in_order(make_client, make_table, db):
    table = make_table()
    running, peak, done = [0], [0], Recorder()
    lock = threading.Lock()
    release = threading.Event()

    def slow(event):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        done(event)

    listener = Listener(table=table, max_parallel=3)
    listener.on(Operation.INSERT, slow)
    client = make_client()
    client.attach(listener)
    with client:
        for i in range(6):
            insert(db, table, title=str(i))
        wait_for(lambda: running[0] == 3, what="three callbacks running at once")
        assert client.stats()["last_acked_lsn"] == 0  # nothing done, nothing acknowledged
        release.set()
        events = done.wait(6)
        wait_for(lambda: client.stats()["last_acked_lsn"] > max(e.commit_lsn for e in events))
    assert peak[0] == 3


def test_max_parallel_one_keeps_commit_order(make_client, make_table, db):
    table = make_table()
    running = []
    order = Recorder()

    def callback(event):
        running.append(1)
        assert len(running) == 1, "two callbacks of a max_parallel=1 listener ran at once"
        running.pop()
        order(event)

    client = make_client()
    client.on(table, Operation.INSERT)(callback)
    with client:
        for i in range(300):
            insert(db, table, title=str(i))
        events = order.wait(300)
    assert [e.new["title"] for e in events] == [str(i) for i in range(300)]


def test_callback_errors_are_logged_passed_to_on_error_and_stream_goes_on(make_client, make_table, db, caplog):
    table = make_table()
    failures = []
    recorder = Recorder()

    def boom(event):
        if event.new["title"] == "bad":
            raise RuntimeError("boom")
        recorder(event)

    client = make_client(on_error=lambda exc, event: failures.append((exc, event)))
    client.on(table, Operation.INSERT)(boom)
    with client:
        insert(db, table, title="bad")
        insert(db, table, title="good")
        recorder.wait(1)
        wait_for(lambda: failures)
        assert client.stats()["callbacks_failed"] == 1
    exc, event = failures[0]
    assert isinstance(exc, RuntimeError) and event.new["title"] == "bad"
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records if r.name.startswith("flash_wal"))


def test_unchanged_toast_is_filled_from_the_old_row(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, body text, n int")
    db.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN body SET STORAGE EXTERNAL").format(sql.Identifier(table)))
    big = "x" * 100_000
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.UPDATE)(recorder)
    with client:
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 0)").format(sql.Identifier(table)), (big,))
        db.execute(sql.SQL("UPDATE {} SET n = 1").format(sql.Identifier(table)))
        event = recorder.wait(1)[0]
    assert event.new["body"] == big and event.new["n"] == 1


def test_unchanged_toast_without_old_row_is_the_sentinel(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, body text, n int")
    db.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN body SET STORAGE EXTERNAL").format(sql.Identifier(table)))
    recorder = Recorder()
    slot = f"flash_{table}"
    client = make_client(driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{slot}", replication_slot=slot, replica_identity_full=False,
    )))
    client.on(table, Operation.UPDATE | Operation.DELETE)(recorder)
    with client:
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 0)").format(sql.Identifier(table)), ("y" * 100_000,))
        db.execute(sql.SQL("UPDATE {} SET n = 1").format(sql.Identifier(table)))
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        update, delete = recorder.wait(2)
    assert update.old is None
    assert update.new == {"id": 1, "body": UNCHANGED_TOAST, "n": 1}
    assert delete.old == {"id": 1}  # the key only
    identity = db.fetchone("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (table,))[0]
    assert identity == "d"  # left as it was


def test_replica_identity_full_is_set_on_listened_tables(make_client, make_table, db):
    table = make_table()
    client = make_client()
    client.on(table)(lambda event: None)
    with client:
        identity = db.fetchone("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (table,))[0]
    assert identity == "f"


def test_lifecycle_context_manager_wait_and_idempotent_close(make_client, make_table, db):
    table = make_table()
    client = make_client()
    client.on(table)(lambda event: None)
    with client as entered:
        assert entered is client
        assert client.stats()["state"] == "streaming"
        assert client.wait(timeout=0.05) is False
        closer = threading.Timer(0.2, client.close)
        closer.start()
        assert client.wait(timeout=10) is True
        closer.join()
    client.close()
    assert client.stats()["state"] == "closed"
    with pytest.raises(FlashError):
        client.start()
    with pytest.raises(FlashError):
        client.attach(Listener(table=table))


def test_close_drains_in_flight_callbacks(make_client, make_table, db):
    table = make_table()
    finished = Recorder()
    started = threading.Event()

    def slow(event):
        started.set()
        threading.Event().wait(0.5)
        finished(event)

    client = make_client()
    client.on(table, Operation.INSERT)(slow)
    client.start()
    insert(db, table, title="x")
    assert started.wait(10)
    client.close()
    assert len(finished) == 1


def test_close_gives_up_after_shutdown_timeout(make_client, make_table, db, caplog):
    table = make_table()
    started, release = threading.Event(), threading.Event()

    def stuck(event):
        started.set()
        release.wait(30)

    client = make_client(shutdown_timeout=0.3)
    client.on(table, Operation.INSERT)(stuck)
    client.start()
    insert(db, table, title="x")
    assert started.wait(10)
    client.close()
    release.set()
    assert any("shutdown_timeout" in r.getMessage() and "events not yet handled" in r.getMessage()
               for r in caplog.records)


def test_client_and_config_accept_keywords_and_reject_bad_values(dsn):
    assert Client(database_cnx=dsn).config.shutdown_timeout == 10.0
    with pytest.raises(ConfigurationError):
        Client(database_cnx="")
    with pytest.raises(ConfigurationError):
        Client(database_cnx=dsn, shutdown_timeout=-1)
    with pytest.raises(ConfigurationError):
        Client(database_cnx=dsn, on_error="not callable")
    with pytest.raises(ConfigurationError):
        Client(database_cnx=dsn, driver="wal_logical")


def test_lost_connection_reconnects_by_itself(make_client, make_table, db):
    table = make_table()
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(recorder)
    client.start()
    insert(db, table, title="before")
    recorder.wait(1)
    db.terminate_walsender(client.driver.config.replication_slot)
    wait_for(lambda: client.stats()["reconnects"] == 1, what="the client to reconnect")
    assert client.stats()["state"] == "streaming"
    insert(db, table, title="after")
    assert [e.new["title"] for e in recorder.wait(2)] == ["before", "after"]
    assert client.wait(timeout=0) is False
    client.close()  # the make_client fixture checks nothing was left behind


def test_logical_messages_and_replication_origins_in_the_stream_are_harmless(make_client, make_table, db, unique):
    table = make_table()
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(recorder)
    origin = f"origin_{unique}"
    db.execute("SELECT pg_replication_origin_create(%s)", (origin,))
    try:
        with client:
            db.execute("SELECT pg_logical_emit_message(false, 'flash', 'outside')")
            db.execute("BEGIN")
            db.execute("SELECT pg_logical_emit_message(true, 'flash', 'inside')")
            insert(db, table, title="with message")
            db.execute("COMMIT")
            db.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
            insert(db, table, title="from an origin")
            db.execute("SELECT pg_replication_origin_session_reset()")
            insert(db, table, title="last")
            events = recorder.wait(3)
    finally:
        db.execute("SELECT pg_replication_origin_drop(%s)", (origin,))
    assert [e.new["title"] for e in events] == ["with message", "from an origin", "last"]


def test_partitioned_table_changes_arrive_under_its_own_name(make_client, make_table, db):
    table = make_table("id int, region text, title text, PRIMARY KEY (id, region)) PARTITION BY LIST (region")
    for region in ("eu", "us"):
        db.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})").format(
            sql.Identifier(f"{table}_{region}"), sql.Identifier(table), sql.Literal(region)))
    recorder = Recorder()
    client = make_client()
    client.on(table)(recorder)
    with client:
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'eu', 'a'), (2, 'us', 'b')").format(sql.Identifier(table)))
        db.execute(sql.SQL("UPDATE {} SET title = 'c' WHERE id = 2").format(sql.Identifier(table)))
        events = recorder.wait(3)
    assert [(type(e).__name__, e.table, e.new["id"]) for e in events] == [
        ("InsertEvent", f"public.{table}", 1), ("InsertEvent", f"public.{table}", 2), ("UpdateEvent", f"public.{table}", 2),
    ]


def test_callback_calling_sys_exit_does_not_stop_its_listener(make_client, make_table, db):
    table = make_table()
    recorder, failures = Recorder(), []

    def callback(event):
        if event.new["title"] == "exit":
            raise SystemExit(3)
        recorder(event)

    client = make_client(on_error=lambda exc, event: failures.append(exc))
    client.on(table, Operation.INSERT)(callback)
    with client:
        insert(db, table, title="exit")
        insert(db, table, title="after")
        recorder.wait(1)
    assert [type(f) for f in failures] == [SystemExit]


def test_no_callback_runs_once_detach_returns(make_client, make_table, db):
    table = make_table()
    entered, release, calls = threading.Event(), threading.Event(), Recorder()

    def callback(event):
        calls(event)
        entered.set()
        release.wait(10)

    listener = Listener(table=table)
    listener.on(Operation.INSERT, callback)
    client = make_client()
    client.attach(listener)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 20)").format(sql.Identifier(table)))
        assert entered.wait(10)
        client.detach(listener)  # the other 19 events of the batch are queued already
        release.set()
        client.close()
    assert len(calls) == 1


def test_acknowledgement_reaches_an_idle_server_without_waiting_for_status_interval(make_client, make_table, db, unique):
    table = make_table()
    slot = f"flash_{unique}"
    recorder = Recorder()
    client = make_client(driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{slot}", replication_slot=slot, status_interval=60)))
    client.on(table, Operation.INSERT)(recorder)
    with client:
        insert(db, table, title="x")
        commit_lsn = recorder.wait(1)[0].commit_lsn
        wait_for(lambda: db.fetchone(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        )[0] > commit_lsn, timeout=5, what="the acknowledgement")


def test_on_message_delivers_logical_decoding_messages(make_client, make_table, db):
    table = make_table()
    audit, everything, rows = Recorder(), Recorder(), Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(rows)
    assert client.on_message("audit")(audit) is audit
    client.on_message("")(everything)
    with client:
        db.execute("SELECT pg_logical_emit_message(false, 'audit.login', 'alice')")
        db.execute("BEGIN")
        db.execute("SELECT pg_logical_emit_message(true, 'audit.tx', '\\x00ff'::bytea)")
        db.execute("SELECT pg_logical_emit_message(true, 'other', 'kept')")
        insert(db, table, title="with messages")
        db.execute("COMMIT")
        db.execute("BEGIN")
        db.execute("SELECT pg_logical_emit_message(true, 'audit.rolled_back', 'never')")
        db.execute("ROLLBACK")
        db.execute("SELECT pg_logical_emit_message(false, 'audit.last', 'bye')")
        messages = audit.wait(3)
        everything.wait(4)
        rows.wait(1)
    assert [(m.prefix, m.content, m.transactional) for m in messages] == [
        ("audit.login", b"alice", False), ("audit.tx", b"\x00\xff", True), ("audit.last", b"bye", False),
    ]
    assert [m.prefix for m in everything.events] == ["audit.login", "audit.tx", "other", "audit.last"]
    assert messages[1].xid == rows.events[0].xid and messages[0].xid is None
    assert messages[0].lsn < messages[1].lsn < messages[2].lsn
    with pytest.raises(ConfigurationError):
        client.on_message(b"bytes")
