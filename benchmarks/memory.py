"""Peak RSS growth of a consuming process over one large transaction.

    python benchmarks/memory.py [--rows 1000000]

Starts an embedded PostgreSQL (or FLASH_WAL_BENCH_PG_BIN=/path/to/bin), then for
use_streaming off and on: a consumer process starts a client, resets its peak-RSS
counter, and reports how far its peak rose while it received every event of one
transaction inserting --rows rows into a 5-column table.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = "bench_memory"


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def consume(dsn: str, rows: int, streaming: bool) -> None:
    import threading

    from flash_wal import Client, Operation
    from flash_wal.drivers.wal_logical import Driver, DriverConfig

    received = [0]
    done = threading.Event()
    client = Client(database_cnx=dsn, driver=Driver(DriverConfig(
        replication_slot="bench_memory", publication_slot_prefix="bench", use_streaming=streaming)))

    @client.on(TABLE, Operation.INSERT)
    def count(event):
        received[0] += 1
        if received[0] == rows:
            done.set()

    with client:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
        baseline = rss_kib("VmRSS")
        print("ready", flush=True)
        started = time.monotonic()
        if not done.wait(1800):
            raise SystemExit(f"only {received[0]} of {rows} events arrived")
        elapsed = time.monotonic() - started
        peak = rss_kib("VmHWM")
    print(json.dumps({"growth_mib": (peak - baseline) / 1024, "seconds": elapsed}), flush=True)


def measure(dsn: str, rows: int, streaming: bool) -> dict:
    consumer = subprocess.Popen(
        [sys.executable, __file__, "--consume", dsn, "--rows", str(rows)] + (["--streaming"] if streaming else []),
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert consumer.stdout.readline().strip() == "ready"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} SELECT i, i %% 1000, 'text number ' || i, now(), i * 1.5"
            " FROM generate_series(1, %s) i", (rows,))
    result = json.loads(consumer.stdout.readline())
    consumer.wait(60)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TABLE}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--consume", metavar="DSN")
    parser.add_argument("--streaming", action="store_true")
    args = parser.parse_args()
    if args.consume:
        consume(args.consume, args.rows, args.streaming)
        return
    from flash_wal.embedded import EmbeddedPostgres

    with EmbeddedPostgres(os.environ.get("FLASH_WAL_BENCH_PG_BIN") or None) as server:
        with psycopg2.connect(server.dsn) as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {TABLE} (id bigint, n int, t text, ts timestamptz, x numeric)")
        print(f"PostgreSQL {server.server_version_num}, one transaction of {args.rows:,} rows")
        for streaming in (False, True):
            result = measure(server.dsn, args.rows, streaming)
            print(f"  use_streaming={streaming!s:5}  peak RSS growth {result['growth_mib']:6.1f} MiB"
                  f"   ({args.rows / result['seconds']:,.0f} events/s)")


if __name__ == "__main__":
    main()
