"""Fault injection against the real server: SIGKILL at random points and at every
step of start() and close(), walsenders terminated, the server restarted.

``make test-faults`` runs these (and the slot health tests) five times in a row.
Each test prints its figures; ``FLASH_WAL_FAULT_SEED`` replays a random run.
"""

import os
import random
import signal
import threading
import time

import psycopg2
import psycopg2.extras
import pytest
from psycopg2 import sql

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.database import Database
from tests.support.processes import ConsumerProcess
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for

ROWS, TRANSACTIONS, KILLS = 3000, 300, 8
SETUP_STEPS = ["checked", "published", "identity-set", "slot-ready", "replicating"]
CLOSE_STEPS = ["draining", "dropping"]


def report(capsys, text):
    with capsys.disabled():
        print(f"\n[fault figures] {text}")


def names(unique):
    return f"flash_{unique}", f"pub_{unique}"


def driver_for(unique, **options):
    slot, prefix = names(unique)
    return Driver(DriverConfig(replication_slot=slot, publication_slot_prefix=prefix, **options))


def insert(db, table, count=1):
    db.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, %s)").format(
        sql.Identifier(table)), (count,))


class Writer(threading.Thread):
    """Inserts ROWS rows in TRANSACTIONS transactions, paced so that kills land among them."""

    def __init__(self, dsn, table):
        super().__init__(daemon=True)
        self.dsn, self.table = dsn, table
        self.stop = threading.Event()
        self.error = None

    def run(self):
        db = Database(self.dsn)
        try:
            for _ in range(TRANSACTIONS):
                if self.stop.wait(0.01):
                    return
                insert(db, self.table, ROWS // TRANSACTIONS)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            db.close()


class IdsFile:
    def __init__(self, path):
        self.path = path

    def ids(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [int(line) for line in f.read().split()]

    def complete(self):
        return set(self.ids()) >= set(range(1, ROWS + 1))


def test_consumer_killed_at_random_points_loses_nothing(db, make_table, unique, tmp_path, capsys):
    seed = int(os.environ.get("FLASH_WAL_FAULT_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    table = make_table()
    slot, prefix = names(unique)
    ids = IdsFile(str(tmp_path / "ids"))
    options = ("--durable", "--ids-file", ids.path)
    writer = Writer(db.dsn, table)
    kills = []
    try:
        # The first run creates the durable slot before any row is written.
        consumer = ConsumerProcess(db.dsn, table, slot, prefix, *options)
        consumer.wait_line("streaming")
        writer.start()
        while len(kills) < KILLS:
            mode = rng.choice(["streaming", "streaming", "streaming", "setup", "closing"]) if kills else "streaming"
            if consumer is None:
                step = {"setup": rng.choice(SETUP_STEPS), "closing": "draining"}.get(mode)
                consumer = ConsumerProcess(db.dsn, table, slot, prefix, *options,
                                           *([f"--die-at={step}"] if step else []))
            if mode == "setup":
                kills.append(f"setup:{step}")
            else:
                consumer.wait_line("streaming")
                target = len(ids.ids()) + rng.randint(1, 250)
                wait_for(lambda: len(ids.ids()) >= target or (not writer.is_alive() and ids.complete()),
                         timeout=60, what="more ids")
                if mode == "closing":
                    consumer.proc.send_signal(signal.SIGTERM)  # close() kills itself while draining
                else:
                    consumer.kill()
                kills.append(mode)
            assert consumer.wait_exit() == -signal.SIGKILL, "\n".join(consumer.lines)
            consumer = None
        writer.join(60)
        assert writer.error is None
        last = ConsumerProcess(db.dsn, table, slot, prefix, *options)
        last.wait_line("streaming")
        wait_for(ids.complete, timeout=60, what=f"all {ROWS} ids")
        last.proc.send_signal(signal.SIGTERM)
        assert last.wait_exit() == 0, "\n".join(last.lines)
    finally:
        writer.stop.set()
        driver_for(unique, durable=True).drop(db.dsn)
    seen = ids.ids()
    assert set(seen) == set(range(1, ROWS + 1))  # nothing lost, nothing invented
    duplicates = len(seen) - ROWS
    report(capsys, f"seed {seed}: {ROWS} rows in {TRANSACTIONS} transactions, {len(kills)} SIGKILLs "
                   f"({', '.join(kills)}); lost 0, duplicates {duplicates} "
                   f"({duplicates / len(kills):.1f} per crash)")
    assert db.slots(slot) == [] and db.publications(prefix) == []


@pytest.mark.parametrize("durable", [False, True], ids=["temporary", "durable"])
@pytest.mark.parametrize("step", SETUP_STEPS + CLOSE_STEPS)
def test_killed_at_a_step_of_start_or_close_the_next_start_works(db, make_table, unique, step, durable):
    if durable and step == "dropping":
        pytest.skip("a durable client drops nothing when it closes")
    table = make_table()
    slot, prefix = names(unique)
    consumer = ConsumerProcess(db.dsn, table, slot, prefix, f"--die-at={step}", *(["--durable"] if durable else []))
    if step in CLOSE_STEPS:
        consumer.wait_line("streaming")
        insert(db, table)
        consumer.wait_line("event 1")
        consumer.proc.send_signal(signal.SIGTERM)
    assert consumer.wait_exit() == -signal.SIGKILL, "\n".join(consumer.lines)

    driver = driver_for(unique, durable=durable)
    recorder = Recorder()
    client = Client(database_cnx=db.dsn, driver=driver)
    client.on(table, Operation.INSERT)(recorder)
    try:
        with client:
            db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('after the kill')").format(sql.Identifier(table)))
            wait_for(lambda: any(e.new["title"] == "after the kill" for e in recorder.events), what="the new row")
        if not durable:
            assert db.slots(slot) == [] and db.publications(prefix) == []
    finally:
        if durable:
            driver_for(unique, durable=True).drop(db.dsn)
    assert db.slots(slot) == [] and db.publications(prefix) == []


def _reconnected_after(client, count):
    """Seconds until the client has reconnected ``count`` times (polled every 2 ms)."""
    start = time.monotonic()
    wait_for(lambda: client.stats()["reconnects"] >= count, timeout=60, what="the reconnect")
    return time.monotonic() - start


def test_walsender_terminated_mid_stream_loses_nothing(make_table, db, unique, capsys):
    table = make_table()
    seen, lock = [], threading.Lock()

    def remember(event):
        with lock:
            seen.append(event.new["id"])

    slot, _ = names(unique)
    client = Client(database_cnx=db.dsn, driver=driver_for(unique, durable=True))
    client.on(table, Operation.INSERT)(remember)
    writer = Database(db.dsn)
    took = []
    try:
        with client:
            for batch in range(20):
                insert(writer, table, 50)
                if batch in (5, 12):
                    db.terminate_walsender(slot)
                    took.append(_reconnected_after(client, len(took) + 1))
            wait_for(lambda: len(set(seen)) == 1000, timeout=30, what="all 1000 rows")
    finally:
        writer.close()
        driver_for(unique, durable=True).drop(db.dsn)
    assert set(seen) == set(range(1, 1001))
    report(capsys, f"walsender terminated twice during 1000 inserts: lost 0, duplicates "
                   f"{len(seen) - 1000}; streaming again after {', '.join(f'{t:.2f} s' for t in took)} "
                   "(default reconnect_delay 0.5 s)")


def test_server_restart_mid_stream_loses_nothing(pg_server, dsn, unique, capsys):
    if pg_server is None:
        pytest.skip("needs a server the tests start themselves")
    table = f"restart_{unique}"
    setup = Database(dsn)
    setup.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, title text)").format(sql.Identifier(table)))
    setup.close()
    seen, lock = [], threading.Lock()

    def remember(event):
        with lock:
            seen.append(event.new["id"])

    client = Client(database_cnx=dsn, driver=driver_for(unique, durable=True))
    client.on(table, Operation.INSERT)(remember)
    try:
        with client:
            writer = Database(dsn)
            insert(writer, table, 100)
            writer.close()
            began = time.monotonic()
            pg_server.restart()
            server_back = time.monotonic() - began
            reconnect = _reconnected_after(client, 1)
            writer = Database(dsn)
            insert(writer, table, 100)
            writer.close()
            wait_for(lambda: len(set(seen)) == 200, timeout=60, what="all 200 rows")
    finally:
        cleanup = Database(dsn)
        cleanup.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        cleanup.close()
        driver_for(unique, durable=True).drop(dsn)
    assert set(seen) == set(range(1, 201))
    report(capsys, f"server restarted mid-stream: lost 0, duplicates {len(seen) - 200}; server back after "
                   f"{server_back:.2f} s, client streaming again {reconnect:.2f} s later "
                   "(default reconnect_delay 0.5 s doubling)")


def test_reconnect_retries_while_another_process_holds_the_slot(make_table, db, unique, caplog):
    table = make_table()
    slot, _ = names(unique)
    recorder = Recorder()
    driver = driver_for(unique, durable=True, reconnect_delay=0.05, reconnect_max_delay=0.2)
    client = Client(database_cnx=db.dsn, driver=driver)
    client.on(table, Operation.INSERT)(recorder)
    thief = None
    try:
        with client:
            insert(db, table)
            recorder.wait(1)
            # The driver's lock keeps the client's first reconnection attempt waiting
            # until the thief holds the slot, as a walsender slow to die would.
            with driver._query.lock:
                db.terminate_walsender(slot)
                wait_for(lambda: db.fetchone("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                             (slot,)) == (None,), what="the slot to be released")
                thief = psycopg2.connect(db.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
                thief.cursor().start_replication(slot_name=slot, decode=False, options={
                    "proto_version": "1", "publication_names": ",".join(driver.config.publication_names)})
            insert(db, table)  # committed while the client cannot read
            wait_for(lambda: any("is active for PID" in r.getMessage() for r in caplog.records),
                     what="a failed attempt")
            assert client.stats()["state"] == "reconnecting"
            thief.close()
            wait_for(lambda: client.stats()["reconnects"] == 1, what="the reconnect")
            insert(db, table)
            wait_for(lambda: {e.new["id"] for e in recorder.events} == {1, 2, 3}, what="all three rows")
    finally:
        if thief is not None:
            thief.close()
        driver_for(unique, durable=True).drop(db.dsn)
