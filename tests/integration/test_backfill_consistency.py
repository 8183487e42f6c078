"""The backfill's guarantee, per key, while writers insert, update (keys included) and
delete random rows: events arrive in the order of the row's history, a ReadEvent
carries exactly the state the events before it left, none follows its row's delete,
and at the end the last event of each row holds its current state."""

import random
import threading
from typing import Any, Dict, List

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import (
    Client, ClientConfig, DeleteEvent, InsertEvent, Listener, Operation, ReadEvent, TruncateEvent, UpdateEvent,
)
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.waiting import wait_for

ROWS = 20_000
GONE = object()


class History:
    """Every event, per key, checked as it comes: a violation is kept, not raised in a worker."""

    def __init__(self) -> None:
        self.state: Dict[Any, Any] = {}
        self.violations: List[str] = []
        self.reads = 0
        self.changes = 0
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self.lock:
            self._check(event)

    def _check(self, event: Any) -> None:
        key, known = event.key, self.state.get(event.key)
        if isinstance(event, ReadEvent):
            self.reads += 1
            if known is GONE:
                self.violations.append(f"ReadEvent {event.new} after the delete of {key}")
            elif known is not None and known != event.new:
                self.violations.append(f"ReadEvent {event.new} of {key}, but the events before left {known}")
            self.state[key] = event.new
            return
        self.changes += 1
        if isinstance(event, InsertEvent):
            if known is not None and known is not GONE:
                self.violations.append(f"InsertEvent {event.new} of {key}, which exists as {known}")
            self.state[key] = event.new
        elif isinstance(event, UpdateEvent):
            if known is GONE:
                self.violations.append(f"UpdateEvent of {key} after its delete")
            elif known is not None and event.old != known:
                self.violations.append(f"UpdateEvent of {key} from {event.old}, but the events before left {known}")
            self.state[key] = event.new
        elif isinstance(event, DeleteEvent):
            if known is GONE:
                self.violations.append(f"DeleteEvent of {key} after its delete")
            elif known is not None and event.old != known:
                self.violations.append(f"DeleteEvent of {key} from {event.old}, but the events before left {known}")
            self.state[key] = GONE
        elif isinstance(event, TruncateEvent):
            self.violations.append("unexpected TruncateEvent")


def write_randomly(dsn: str, table: str, stop: threading.Event, seed: int, big: bool, counts: Dict[str, int]) -> None:
    """Random transactions of 1-5 statements, and with ``big`` now and then one of a few
    hundred rows (streamed, with streaming on)."""
    rng = random.Random(seed)
    conn = psycopg2.connect(dsn)
    name = sql.Identifier(table)
    next_id = ROWS * 10 + seed * 1_000_000
    try:
        with conn.cursor() as cursor:
            while not stop.is_set():
                for _ in range(rng.randint(1, 5)):
                    choice, target = rng.random(), rng.randint(1, ROWS)
                    if choice < 0.45:
                        cursor.execute(sql.SQL("UPDATE {} SET n = n + 1, note = md5(random()::text) WHERE id = %s")
                                       .format(name), (target,))
                    elif choice < 0.6:
                        cursor.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(name), (target,))
                    elif choice < 0.8:
                        next_id += 1
                        cursor.execute(sql.SQL("INSERT INTO {} VALUES (%s, 0, 'new') ON CONFLICT DO NOTHING")
                                       .format(name), (rng.choice([target, next_id]),))
                    else:  # a key change: delete of the old key, insert of the new one
                        next_id += 1
                        cursor.execute(sql.SQL("UPDATE {} SET id = %s WHERE id = %s").format(name), (next_id, target))
                if big and rng.random() < 0.02:
                    low = rng.randint(1, ROWS - 300)
                    cursor.execute(sql.SQL("UPDATE {} SET n = n + 1 WHERE id BETWEEN %s AND %s").format(name),
                                   (low, low + 300))
                conn.commit()
                counts["transactions"] += 1
    finally:
        conn.close()


@pytest.mark.parametrize("chunk_size, streaming, max_parallel", [
    (97, False, 1), (1000, False, 1), (97, True, 1), (250, False, 4),
])
def test_backfill_under_random_writes(dsn, db, make_table, unique, chunk_size, streaming, max_parallel):
    table = make_table("id int PRIMARY KEY, n int NOT NULL, note text")
    db.execute(sql.SQL("INSERT INTO {} SELECT g, 0, 'start' FROM generate_series(1, %s) g")
               .format(sql.Identifier(table)), (ROWS,))
    client_dsn = psycopg2.extensions.make_dsn(dsn, options="-c logical_decoding_work_mem=64kB") if streaming else dsn
    slot = f"bf_{unique}"
    client = Client(ClientConfig(database_cnx=client_dsn, driver=Driver(DriverConfig(
        publication_slot_prefix=f"p_{slot}", replication_slot=slot, use_streaming=streaming))))
    history = History()
    arrived = set()
    listener = Listener(table=table, max_parallel=max_parallel)
    if max_parallel == 1:
        listener.on(Operation.ALL | Operation.READ, history)
    else:
        listener.on(Operation.ALL | Operation.READ, lambda event: arrived.add((type(event).__name__, event.key,
                                                                                 repr(getattr(event, "new", None)))))
    client.attach(listener)
    stop = threading.Event()
    counts = {"transactions": 0}
    writers = [threading.Thread(target=write_randomly, args=(dsn, table, stop, seed, streaming, counts))
               for seed in (1, 2)]
    with client:
        for writer in writers:
            writer.start()
        wait_for(lambda: counts["transactions"] > 20, what="writers under way")
        backfill = client.backfill(listener, chunk_size=chunk_size)
        try:
            assert backfill.wait(timeout=240), backfill
        finally:
            stop.set()
            for writer in writers:
                writer.join()
        # Everything written is delivered once the stream reaches the server's position now.
        db.execute("SELECT pg_logical_emit_message(true, 'done', '')")
        end = db.fetchone("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0]
        wait_for(lambda: client.stats()["last_acked_lsn"] >= end, timeout=120, what="the stream caught up")
    assert counts["transactions"] > 50, counts
    rows = {(row[0],): {"id": row[0], "n": row[1], "note": row[2]}
            for row in db.fetchall(sql.SQL("SELECT id, n, note FROM {}").format(sql.Identifier(table)))}
    if max_parallel == 1:
        assert history.violations == []
        assert history.reads > ROWS // 2, (history.reads, history.changes)
        live = {key: state for key, state in history.state.items() if state is not GONE}
        assert live == rows  # the last event of every row is its current state; no ghost rows
    else:
        keys = {key for _kind, key, _new in arrived}
        assert set(rows) <= keys  # every row arrived, read or changed
    stats = client.stats()["backfills"]
    assert stats[0]["state"] == "completed" and stats[0]["table"] == f"public.{table}"
