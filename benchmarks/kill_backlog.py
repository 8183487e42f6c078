"""Duplicates per SIGKILL of a durable consumer draining a backlog.

    python benchmarks/kill_backlog.py [--rows 500000] [--transactions 500] [--kills 3] [--seed N]

Starts an embedded PostgreSQL on 127.0.0.1, creates a durable slot (a consumer
process starts and closes), commits --rows rows in --transactions transactions while
no consumer runs, then starts the consumer (tests/support/consumer.py --record), SIGKILLs it
--kills times at random moments of the drain (after a random 5-25 % of the backlog
more has been recorded), restarts it each time, and lets the last one drain the rest.
Prints rows lost and, per kill, the rows the next process delivered again. Exits 1 if
a row was lost. What a consumer recorded was written before its callback returned,
so before it could be acknowledged; the record is not fsynced (--fsync to do so): a
SIGKILL loses nothing the process wrote.
"""

import argparse
import os
import random
import sys
import tempfile
import time

import psycopg2
from psycopg2 import sql

from faults_common import Consumer, RecordFile, wait_until

TABLE, SLOT, PREFIX = "kill_backlog", "kill_backlog", "kill_backlog"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--transactions", type=int, default=500)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole drain, at most")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)

    from flash_wal.embedded import EmbeddedPostgres

    with EmbeddedPostgres(os.environ.get("FLASH_WAL_BENCH_PG_BIN")) as server, \
            tempfile.TemporaryDirectory() as scratch:
        dsn = server.dsn
        db = psycopg2.connect(dsn)
        db.autocommit = True
        with db.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text)").format(sql.Identifier(TABLE)))
        record = RecordFile(os.path.join(scratch, "record"))
        options = ("--record", record.path, *(() if args.fsync else ("--no-fsync",)))
        first = Consumer(dsn, TABLE, SLOT, PREFIX, *options)
        first.wait_streaming()
        first.terminate()  # the durable slot stays: what follows is a backlog
        began = time.monotonic()
        per = args.rows // args.transactions
        with db.cursor() as cursor:
            for start in range(1, args.rows + 1, per):
                cursor.execute(sql.SQL("INSERT INTO {} (id, title) SELECT i, 'backlog row ' || i"
                                       " FROM generate_series(%s, %s) i").format(sql.Identifier(TABLE)),
                               (start, min(start + per - 1, args.rows)))
        print(f"seed {seed}: {args.rows} rows committed in {args.transactions} transactions "
              f"({time.monotonic() - began:.1f} s) with no consumer running", flush=True)

        deadline = time.monotonic() + args.timeout
        kills = []  # (rows recorded before the kill, distinct ids before it)
        began = time.monotonic()
        for number in range(1, args.kills + 1):
            consumer = Consumer(dsn, TABLE, SLOT, PREFIX, *options)
            consumer.wait_streaming()
            before = len(record.read())
            target = before + int(rng.uniform(0.05, 0.25) * args.rows)
            wait_until(lambda: len(record.read()) >= target or len(set(record.values())) >= args.rows,
                       max(deadline - time.monotonic(), 1), f"{target} rows recorded")
            consumer.kill()
            entries = record.read()
            kills.append((len(entries), len({value for _, _, value, _ in entries})))
            print(f"kill {number}: SIGKILL after {len(entries) - before} rows recorded by that process "
                  f"({kills[-1][1]} distinct so far)", flush=True)
        last = Consumer(dsn, TABLE, SLOT, PREFIX, *options)
        last.wait_streaming()
        wait_until(lambda: len(set(record.values())) >= args.rows, max(deadline - time.monotonic(), 1),
                   "the whole backlog")
        code = last.terminate()
        drained = time.monotonic() - began
        db.close()

    entries = record.read()
    values = [value for _, _, value, _ in entries]
    lost = set(range(1, args.rows + 1)) - set(values)
    per_kill = []
    for number, (recorded, _) in enumerate(kills):
        seen_before = set(values[:recorded])
        end = kills[number + 1][0] if number + 1 < len(kills) else len(values)
        per_kill.append(sum(1 for value in values[recorded:end] if value in seen_before))
    duplicates = len(values) - len(set(values))
    print(f"backlog of {args.rows} rows in {args.transactions} transactions, {args.kills} SIGKILLs during the "
          f"drain (seed {seed}): lost {len(lost)}; duplicates {duplicates} in all, per kill "
          f"{', '.join(str(d) for d in per_kill)} (mean {duplicates / max(args.kills, 1):.0f}); "
          f"drained in {drained:.1f} s; last consumer exited {code}")
    return 1 if lost or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
