"""Delivery survives what callbacks and handlers do: on_error raising anything, off and
detach while a callback runs, a burst of slow callbacks; and failures are logged
without the rows."""

import threading

import pytest
from psycopg2 import sql

from flash_wal import Client, Listener, Operation
from flash_wal.listener import UNBOUNDED_WORKERS
from flash_wal.drivers.wal_logical import Driver, DriverConfig
from flash_wal.events import format_lsn

from tests.support.recorder import Recorder
from tests.support.waiting import wait_for
from tests.support.database import confirmed_flush


def insert_titles(db, table, *titles):
    for title in titles:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES (%s)").format(sql.Identifier(table)), (title,))


@pytest.fixture
def durable_slot(db, unique):
    """A durable driver's slot name; the slot and publication are dropped after the test."""
    slot = f"flash_{unique}"
    yield slot
    Driver(DriverConfig(publication_slot_prefix=f"pub_{slot}", replication_slot=slot, durable=True)).drop(db.dsn)
    assert db.slots(slot) == []


def test_on_error_raising_system_exit_or_keyboard_interrupt_does_not_stop_delivery(make_table, db, durable_slot, caplog):
    table = make_table()
    handled, delivered = [], Recorder()
    raised = {"exit": SystemExit(2), "interrupt": KeyboardInterrupt()}

    def callback(event):
        if event.new["title"] in raised:
            raise ValueError(event.new["title"])
        delivered(event)

    def on_error(exc, event):
        handled.append(str(exc))
        raise raised[str(exc)]

    client = Client(database_cnx=db.dsn, on_error=on_error, shutdown_timeout=5, driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{durable_slot}", replication_slot=durable_slot, durable=True,
        status_interval=1)))
    client.on(table, Operation.INSERT)(callback)
    with client:
        insert_titles(db, table, "exit", "interrupt", "after")
        commit_lsn = delivered.wait(1)[0].commit_lsn
        assert handled == ["exit", "interrupt"]
        wait_for(lambda: confirmed_flush(db, durable_slot) > commit_lsn, what="the slot to move past 'after'")
    failed_handlers = [r for r in caplog.records if "on_error handler" in r.getMessage()]
    assert [type(r.exc_info[1]) for r in failed_handlers] == [SystemExit, KeyboardInterrupt]


def test_a_failing_callback_is_logged_without_the_row(make_client, make_table, db, caplog):
    table = make_table()
    secret = "personal-data-4711"

    def failing(event):
        raise RuntimeError("callback bug")

    client = make_client(on_error=lambda exc, event: None)
    client.on(table, Operation.INSERT)(failing)
    recorder = Recorder()
    client.on(table, Operation.INSERT)(recorder)
    with client:
        insert_titles(db, table, secret)
        event = recorder.wait(1)[0]
        wait_for(lambda: client.stats()["callbacks_failed"] == 1)
    records = [r for r in caplog.records if r.name.startswith("flash_wal")]
    failure = next(r for r in records if "failed on" in r.getMessage())
    message = failure.getMessage()
    assert f"INSERT on public.{table} at {format_lsn(event.lsn)}" in message
    assert "callback bug" in failure.exc_text  # the traceback is there
    for record in records:
        assert secret not in record.getMessage() and secret not in (record.exc_text or "")


def blocking_callback(log, name, entered, release):
    def callback(event):
        entered.release()
        release.wait(10)
        log.append(f"{name} returned")

    return callback


def run_while_blocked(name, action, listener, log, release):
    """Run ``action`` in a thread while the listener's callbacks are blocked; once it
    waits for them (or has returned), release them."""
    thread = threading.Thread(target=lambda: (action(), log.append(f"{name} returned")))
    thread.start()
    wait_for(lambda: not thread.is_alive() or listener.running_calls.waiters, what=f"{name} to wait")
    release.set()
    thread.join(10)


@pytest.mark.parametrize("max_parallel", [1, 4])
def test_detach_returns_only_once_running_callbacks_returned(make_client, make_table, db, max_parallel):
    table = make_table()
    log, entered, release = [], threading.Semaphore(0), threading.Event()
    listener = Listener(table=table, max_parallel=max_parallel)
    listener.on(Operation.INSERT, blocking_callback(log, "callback", entered, release))
    client = make_client()
    client.attach(listener)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 20)").format(sql.Identifier(table)))
        for _ in range(max_parallel):  # that many calls running, the rest queued behind them
            assert entered.acquire(timeout=10)
        run_while_blocked("detach", lambda: client.detach(listener), listener, log, release)
        assert log == ["callback returned"] * max_parallel + ["detach returned"]
    assert log == ["callback returned"] * max_parallel + ["detach returned"]  # none after


def test_off_returns_only_once_the_running_call_returned(make_client, make_table, db):
    table = make_table()
    log, entered, release = [], threading.Semaphore(0), threading.Event()
    listener = Listener(table=table)
    blocking = blocking_callback(log, "callback", entered, release)
    listener.on(Operation.INSERT, blocking)
    others = Recorder()
    listener.on(Operation.INSERT, others)
    client = make_client()
    client.attach(listener)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 20)").format(sql.Identifier(table)))
        assert entered.acquire(timeout=10)
        run_while_blocked("off", lambda: listener.off(blocking), listener, log, release)
        assert len(others.wait(20)) == 20  # the listener's other callback goes on
    assert log == ["callback returned", "off returned"]


def test_off_and_detach_from_the_callback_itself_return_at_once(make_client, make_table, db):
    table = make_table()
    calls = Recorder()
    first, second = Listener(table=table), Listener(table=table)
    client = make_client()

    def turns_itself_off(event):
        calls(event)
        first.off(turns_itself_off)

    def detaches_its_listener(event):
        calls(event)
        client.detach(second)

    first.on(Operation.INSERT, turns_itself_off)
    second.on(Operation.INSERT, detaches_its_listener)
    client.attach(first, second)
    with client:
        insert_titles(db, table, "one", "two", "three")
        calls.wait(2)
        wait_for(lambda: client.listeners == [first], what="the detach")
        sentinel = Recorder()
        client.on(table, Operation.INSERT)(sentinel)
        insert_titles(db, table, "four")
        sentinel.wait(1)
    assert len(calls) == 2


def test_unbounded_parallelism_uses_a_bounded_number_of_threads(make_client, make_table, db):
    table = make_table()
    lock, running, most = threading.Lock(), [0], {"running": 0, "threads": 0}
    release, done = threading.Event(), Recorder()
    prefix = f"flash_wal-public.{table}-"

    def slow(event):
        with lock:
            running[0] += 1
            threads = sum(1 for thread in threading.enumerate() if thread.name.startswith(prefix))
            most["running"] = max(most["running"], running[0])
            most["threads"] = max(most["threads"], threads)
        release.wait(10)
        with lock:
            running[0] -= 1
        done(event)

    listener = Listener(table=table, max_parallel=-1)
    listener.on(Operation.INSERT, slow)
    client = make_client()
    client.attach(listener)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 1000)").format(
            sql.Identifier(table)))
        wait_for(lambda: running[0] == UNBOUNDED_WORKERS, what="every worker busy")
        # every event handed out while the workers are busy: the others wait for one
        wait_for(lambda: client.stats()["queue_depth"] == 1000, what="all events queued")
        release.set()
        assert len(done.wait(1000)) == 1000
    assert most == {"running": UNBOUNDED_WORKERS, "threads": UNBOUNDED_WORKERS}
