"""A durable client that is never idle: draining a backlog while its walsender is
terminated, and a sustained load. A reconnect resumes after the last transaction
received whole (nothing delivered twice in the process, commit_lsn never back), and
the acknowledged position keeps moving while busy (API.md, "Health")."""

import threading
import time

from psycopg2 import sql

from flash_wal import Client, Listener, Operation

from tests.support.database import Database
from tests.support.waiting import wait_for
from .test_faults import driver_for, names, report

BACKLOG_ROWS, BACKLOG_TRANSACTIONS = 100_000, 200
TERMINATE_AT = (0.2, 0.45, 0.7)  # fractions of the backlog received
STATUS_INTERVAL = 1.0
LOAD_SECONDS = 4.0
LOAD_BACKLOG_ROWS = 100_000
#: How far the confirmed position may trail what completed: status_interval, plus slack
#: for a machine shared with other work.
ACK_SLACK = 2.0


def confirmed_flush(db, slot):
    return db.fetchone(
        "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )[0]


class Delivered:
    """A max_parallel=1 listener's callback that records (id, commit_lsn, when it returned)."""

    def __init__(self):
        self.rows = []
        self._lock = threading.Lock()

    def __call__(self, event):
        with self._lock:
            self.rows.append((event.new["id"], event.commit_lsn, time.monotonic()))

    def ids(self):
        with self._lock:
            return [row[0] for row in self.rows]

    def completed_by(self, moment):
        """The highest commit position of what had been handled at ``moment``."""
        with self._lock:
            return max((lsn for _, lsn, at in self.rows if at <= moment), default=0)


def client_for(dsn, table, unique, delivered, max_queued_events=10_000):
    listener = Listener(table=table, max_parallel=1)
    listener.on(Operation.INSERT, delivered)
    client = Client(database_cnx=dsn, shutdown_timeout=5, max_queued_events=max_queued_events,
                    driver=driver_for(unique, durable=True, status_interval=STATUS_INTERVAL))
    client.attach(listener)
    return client


def write_backlog(db, table, unique, rows=BACKLOG_ROWS, transactions=BACKLOG_TRANSACTIONS):
    """Create the durable slot, then commit ``rows`` rows (ids 1..rows) while no client runs."""
    with client_for(db.dsn, table, unique, Delivered()):
        pass
    per = rows // transactions
    for first in range(1, rows + 1, per):
        db.execute(sql.SQL("INSERT INTO {} (id, title) SELECT i, 'backlog' FROM generate_series(%s, %s) i").format(
            sql.Identifier(table)), (first, first + per - 1))


def test_walsender_terminated_while_a_backlog_drains(db, make_table, unique, capsys):
    table = make_table("id int PRIMARY KEY, title text")
    slot, _ = names(unique)
    delivered = Delivered()
    took = []
    try:
        write_backlog(db, table, unique)
        client = client_for(db.dsn, table, unique, delivered)
        with client:
            began = time.monotonic()
            for fraction in TERMINATE_AT:
                wait_for(lambda: len(set(delivered.ids())) >= fraction * BACKLOG_ROWS, timeout=60,
                         what=f"{fraction:.0%} of the backlog")
                terminated = time.monotonic()
                db.terminate_walsender(slot)
                wait_for(lambda: client.stats()["reconnects"] >= len(took) + 1 and
                         client.stats()["state"] == "streaming", timeout=30, what="the reconnect")
                took.append(time.monotonic() - terminated)
            wait_for(lambda: len(set(delivered.ids())) >= BACKLOG_ROWS, timeout=90, what="the whole backlog")
            drained = time.monotonic() - began
    finally:
        driver_for(unique, durable=True).drop(db.dsn)
    ids = delivered.ids()
    lost = set(range(1, BACKLOG_ROWS + 1)) - set(ids)
    duplicates = len(ids) - len(set(ids))
    report(capsys, f"walsender terminated {len(took)} times while a backlog of {BACKLOG_ROWS} rows in "
                   f"{BACKLOG_TRANSACTIONS} transactions drained (in {drained:.1f} s): lost {len(lost)}, "
                   f"duplicates in the same process {duplicates}; streaming again after "
                   f"{', '.join(f'{t:.2f} s' for t in took)} (default reconnect_delay 0.5 s)")
    assert not lost
    assert duplicates == 0, f"{duplicates} rows delivered twice in the same process after {len(took)} reconnects"
    lsns = [lsn for _, lsn, _ in delivered.rows]
    backwards = sum(1 for a, b in zip(lsns, lsns[1:]) if b < a)
    assert backwards == 0, f"commit_lsn went back {backwards} times within the process (max_parallel=1)"


class Load(threading.Thread):
    """Commits transactions of ``rows`` rows back to back for ``seconds``."""

    def __init__(self, dsn, table, seconds, rows=1000, first=1):
        super().__init__(daemon=True)
        self.dsn, self.table, self.seconds, self.rows, self.first = dsn, table, seconds, rows, first
        self.committed = 0
        self.error = None

    def run(self):
        writer = Database(self.dsn)
        try:
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline:
                first = self.first + self.committed * self.rows
                writer.execute(sql.SQL("INSERT INTO {} (id, title) SELECT i, 'load' FROM generate_series(%s, %s) i")
                               .format(sql.Identifier(self.table)), (first, first + self.rows - 1))
                self.committed += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            writer.close()


def test_acknowledged_position_moves_under_sustained_load(db, make_table, unique, capsys):
    table = make_table("id int PRIMARY KEY, title text")
    slot, _ = names(unique)
    delivered = Delivered()
    samples = []  # (when, confirmed_flush_lsn)
    try:
        # A head start, and a queue that never fills: the client has something to read
        # at every moment of the load, and never waits for room.
        write_backlog(db, table, unique, LOAD_BACKLOG_ROWS, LOAD_BACKLOG_ROWS // 1000)
        with client_for(db.dsn, table, unique, delivered, max_queued_events=10_000_000):
            load = Load(db.dsn, table, LOAD_SECONDS, first=LOAD_BACKLOG_ROWS + 1)
            began = time.monotonic()
            load.start()
            while load.is_alive() and time.monotonic() < began + LOAD_SECONDS + 30:
                samples.append((time.monotonic(), confirmed_flush(db, slot)))
                time.sleep(0.1)  # a sampling period, not a wait for something
            load.join(30)
            assert load.error is None and not load.is_alive()
            lag = db.fetchone("SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots"
                              " WHERE slot_name = %s", (slot,))[0]
            wait_for(lambda: len(delivered.ids()) >= LOAD_BACKLOG_ROWS + load.committed * load.rows, timeout=60,
                     what="every row")
    finally:
        driver_for(unique, durable=True).drop(db.dsn)
    start_position = samples[0][1]
    moves = len({lsn for _, lsn in samples}) - 1
    behind = [(when - began, lsn, delivered.completed_by(when - STATUS_INTERVAL - ACK_SLACK))
              for when, lsn in samples if when - began >= STATUS_INTERVAL + ACK_SLACK]
    late = [(round(at, 1), need - lsn) for at, lsn, need in behind if lsn <= need]
    report(capsys, f"sustained load of {load.committed} transactions of {load.rows} rows in {LOAD_SECONDS:.0f} s "
                   f"(status_interval {STATUS_INTERVAL:.0f} s): confirmed_flush_lsn moved {moves} times while it ran, "
                   f"{len(late)} of {len(behind)} samples trailed what had completed by more than "
                   f"{STATUS_INTERVAL + ACK_SLACK:.0f} s; WAL behind the slot when the load stopped: {lag} bytes")
    assert moves >= 2, (f"confirmed_flush_lsn moved {moves} times during {LOAD_SECONDS:.0f} s of sustained load "
                        f"(stayed at {start_position})")
    assert not late, (f"confirmed_flush_lsn trailed the transactions completed "
                      f"{STATUS_INTERVAL + ACK_SLACK:.0f} s earlier: (seconds into the load, bytes behind) {late[:5]}")
