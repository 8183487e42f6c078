"""The soak: a steady mixed load into a durable consumer process, with faults.

    SOAK_SECONDS=600 python benchmarks/soak.py [--fault-every 30] [--rss-growth-mib 64]

Starts an embedded PostgreSQL on 127.0.0.1 and a consumer process (tests/support/consumer.py
--durable --streaming --all-operations --record) listening to a table that a load
generator keeps changing: small transactions of inserts, updates and deletes, and
every few seconds a large transaction that the server streams. Each change carries a
sequence number of its own, and the same transaction writes it, with its operation,
to a journal table nobody listens to, so the journal says exactly what committed.
Every --fault-every seconds one fault, in turn: SIGKILL of the consumer (restarted at
once), its walsender terminated, the server restarted.

Prints as it goes: changes committed and recorded, the confirmed position's lag
(pg_current_wal_lsn() - confirmed_flush_lsn) and the consumer's RSS; at the end:
events lost (journal entries never recorded), duplicates per fault, the largest lag,
and RSS over time. Exits 1 if an event was lost or the RSS grew by more than
--rss-growth-mib over its first figure after warm-up.
"""

import argparse
import os
import random
import sys
import tempfile
import threading
import time

import psycopg2
from psycopg2 import sql

from faults_common import Consumer, RecordFile, wait_until

TABLE, JOURNAL, SLOT, PREFIX = "soak", "soak_journal", "soak", "soak"
LARGE_EVERY, LARGE_ROWS = 7.0, 3000  # seconds, rows
SAMPLE_EVERY = 5.0
WARM_UP = 30.0  # seconds before RSS figures count


class Load(threading.Thread):
    """Mixed transactions until stopped; survives the server going away."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rng = dsn, random.Random(seed)
        self.stop = threading.Event()
        self.seq = 0
        self.transactions = self.failures = 0
        self.conn = None

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def run(self) -> None:
        last_large = time.monotonic()
        while not self.stop.is_set():
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg2.connect(self.dsn, connect_timeout=5)
                with self.conn, self.conn.cursor() as cursor:
                    if time.monotonic() - last_large > LARGE_EVERY:
                        last_large = time.monotonic()
                        self._large(cursor)
                    else:
                        for _ in range(self.rng.randint(1, 5)):
                            self._small(cursor)
                self.transactions += 1
                self.stop.wait(0.005)
            except psycopg2.Error:
                self.failures += 1  # the server restarting: the journal knows what committed
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                self.stop.wait(0.2)
        if self.conn is not None:
            self.conn.close()

    def _small(self, cursor) -> None:
        kind = self.rng.random()
        seq = self._next()
        table, journal = sql.Identifier(TABLE), sql.Identifier(JOURNAL)
        if kind < 0.5:
            cursor.execute(sql.SQL("WITH i AS (INSERT INTO {} (seq, payload) VALUES (%s, repeat('p', %s)) RETURNING seq)"
                                   " INSERT INTO {} SELECT 'I', seq FROM i").format(table, journal),
                           (seq, self.rng.randint(10, 500)))
        elif kind < 0.8:
            cursor.execute(sql.SQL("WITH u AS (UPDATE {0} SET seq = %s, payload = 'updated' WHERE id = "
                                   "(SELECT id FROM {0} ORDER BY id DESC OFFSET %s LIMIT 1) RETURNING seq)"
                                   " INSERT INTO {1} SELECT 'U', seq FROM u").format(table, journal),
                           (seq, self.rng.randint(0, 200)))
        else:
            cursor.execute(sql.SQL("WITH d AS (DELETE FROM {0} WHERE id = "
                                   "(SELECT id FROM {0} ORDER BY id OFFSET %s LIMIT 1) RETURNING seq)"
                                   " INSERT INTO {1} SELECT 'D', seq FROM d").format(table, journal),
                           (self.rng.randint(0, 200),))

    def _large(self, cursor) -> None:
        first = self.seq + 1
        self.seq += LARGE_ROWS
        cursor.execute(sql.SQL("WITH i AS (INSERT INTO {} (seq, payload) SELECT s, repeat('L', 100)"
                               " FROM generate_series(%s, %s) s RETURNING seq) INSERT INTO {} SELECT 'I', seq FROM i")
                       .format(sql.Identifier(TABLE), sql.Identifier(JOURNAL)), (first, self.seq))


def query(dsn: str, text: str, params=()):
    """One query on a connection of its own, or None while the server is unreachable."""
    try:
        conn = psycopg2.connect(dsn, connect_timeout=3)
    except psycopg2.Error:
        return None
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(text, params)
            return cursor.fetchall() if cursor.description else []
    except psycopg2.Error:
        return None
    finally:
        conn.close()


def lag_bytes(dsn: str):
    rows = query(dsn, "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots"
                      " WHERE slot_name = %s", (SLOT,))
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--fault-every", type=float, default=30.0)
    parser.add_argument("--rss-growth-mib", type=float, default=64.0)
    parser.add_argument("--status-interval", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)

    from flash_wal.embedded import EmbeddedPostgres

    with EmbeddedPostgres(os.environ.get("FLASH_WAL_BENCH_PG_BIN")) as server, \
            tempfile.TemporaryDirectory() as scratch:
        dsn = server.dsn
        query(dsn, sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, seq bigint NOT NULL, payload text);"
                           " CREATE TABLE {} (op char(1), seq bigint, PRIMARY KEY (op, seq))").format(
            sql.Identifier(TABLE), sql.Identifier(JOURNAL)))
        record = RecordFile(os.path.join(scratch, "record"))
        options = ("--streaming", "--all-operations", "--column", "seq", "--record", record.path, "--no-fsync",
                   "--status-interval", str(args.status_interval))

        def start_consumer() -> Consumer:
            consumer = Consumer(dsn, TABLE, SLOT, PREFIX, *options)
            consumer.wait_streaming()
            return consumer

        consumer = start_consumer()
        consumer_started = time.monotonic()
        load = Load(dsn, seed)
        load.start()
        print(f"soak: {args.seconds:.0f} s, a fault every {args.fault_every:.0f} s, seed {seed}", flush=True)
        began = time.monotonic()
        faults = []  # (seconds into the run, kind, records before it)
        lags, rss = [], []  # (seconds, bytes) and (seconds, KiB, counted)
        kinds = ["sigkill", "walsender", "server-restart"]
        next_fault, next_sample = began + args.fault_every, began
        reconnect_times = []
        try:
            while time.monotonic() - began < args.seconds:
                now = time.monotonic()
                if now >= next_sample:
                    next_sample += SAMPLE_EVERY
                    lag = lag_bytes(dsn)
                    if lag is not None:
                        lags.append((now - began, lag))
                    kib = consumer.rss_kib()
                    if kib is not None:
                        rss.append((now - began, kib, now - consumer_started >= WARM_UP))
                    print(f"{now - began:6.0f} s  committed txns {load.transactions:7d}  recorded "
                          f"{len(record.read()):8d}  lag {lag if lag is not None else '-':>10} B  rss "
                          f"{(kib or 0) / 1024:6.1f} MiB", flush=True)
                if now >= next_fault:
                    next_fault += args.fault_every
                    kind = kinds[len(faults) % len(kinds)]
                    faults.append((now - began, kind, len(record.read())))
                    if kind == "sigkill":
                        consumer.kill()
                        consumer = start_consumer()
                        consumer_started = time.monotonic()
                    elif kind == "walsender":
                        pid = query(dsn, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))
                        if pid and pid[0][0]:
                            query(dsn, "SELECT pg_terminate_backend(%s)", (pid[0][0],))
                            old = pid[0][0]
                            began_reconnect = time.monotonic()
                            wait_until(lambda: (query(dsn, "SELECT active_pid FROM pg_replication_slots WHERE "
                                                      "slot_name = %s", (SLOT,)) or [(old,)])[0][0] not in (None, old),
                                       60, "the consumer to reconnect")
                            reconnect_times.append(time.monotonic() - began_reconnect)
                    else:
                        server.restart()
                    print(f"{now - began:6.0f} s  fault: {kind}", flush=True)
                if consumer.proc.poll() is not None:
                    print("the consumer exited:\n" + "\n".join(consumer.lines[-30:]), flush=True)
                    return 1
                time.sleep(0.1)
        finally:
            load.stop.set()
            load.join(30)
        journal = wait_until(lambda: query(dsn, sql.SQL("SELECT op, seq FROM {}").format(sql.Identifier(JOURNAL))),
                             60, "the journal")
        expected = {(op, seq) for op, seq in journal}
        wait_until(lambda: expected <= {(op, value) for _, op, value, _ in record.read()}, 180,
                   "the consumer to record everything committed")
        code = consumer.terminate()

    keys = [(op, value) for _, op, value, _ in record.read()]
    lost = expected - set(keys)
    print(f"\nevents committed {len(expected)}, recorded {len(keys)}, lost {len(lost)}; "
          f"consumer exited {code}; load transactions {load.transactions}, failed {load.failures}")
    for number, (at, kind, mark) in enumerate(faults):
        end = faults[number + 1][2] if number + 1 < len(faults) else len(keys)
        before = set(keys[:mark])
        print(f"  fault {number + 1:2d} at {at:5.0f} s  {kind:15s} duplicates {sum(k in before for k in keys[mark:end])}")
    if reconnect_times:
        print(f"walsender terminated: a new walsender after {', '.join(f'{t:.2f}' for t in reconnect_times)} s")
    if lags:
        print(f"confirmed-position lag: largest {max(lag for _, lag in lags)} B; over time (s: bytes) "
              + ", ".join(f"{at:.0f}: {lag}" for at, lag in lags))
    counted = [kib for _, kib, warm in rss if warm]
    grown = (max(counted) - counted[0]) / 1024 if counted else 0.0
    print("consumer RSS over time (s: MiB) " + ", ".join(f"{at:.0f}: {kib / 1024:.1f}" for at, kib, _ in rss))
    print(f"RSS growth after warm-up: {grown:.1f} MiB (bound {args.rss_growth_mib:.0f} MiB)")
    if lost:
        print(f"LOST: {sorted(lost)[:20]}")
    return 1 if lost or grown > args.rss_growth_mib or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
