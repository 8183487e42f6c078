"""What each fast path of the replication thread saves against its plain twin.

    python benchmarks/hot_path.py [--rounds N] [--number N] [--dsn DSN]

Per change the replication thread reads a tuple, decodes the row, builds an event and
hands it to the listeners that want it (the dispatcher's change()); each of those has
a fast version and a plain twin (tests/unit/test_hot_path.py checks they
agree). This times both of each pair side by side, on the benchmark's row (bigint, int,
text, timestamptz, numeric), in alternating rounds (fast first, then plain first), and
prints the best round of each, what the fast one saves and the ratio plain / fast.

Decoding needs psycopg2 casters bound to a real cursor (timestamptz asks it for its
time zone), so the script starts an embedded PostgreSQL unless --dsn names a server.
See docs/performance.rst.
"""

import argparse
import datetime
import os
import sys
import timeit
from typing import Any, Callable, Dict, List, Tuple

import psycopg2

ROW = (b"123456", b"456", b"text number 123456", b"2026-11-22 10:00:00.123456+00", b"185184.0")
COLUMNS = (("id", 20), ("n", 23), ("t", 25), ("ts", 1184), ("x", 1700))
NOW = datetime.datetime(2026, 11, 22, 10, tzinfo=datetime.timezone.utc)


def pairs(cursor: Any) -> List[Tuple[str, Callable[[], Any], Callable[[], Any]]]:
    from flash_wal import Listener, Operation
    from flash_wal.decoding import RowDecoder, TypeCasters
    from flash_wal.dispatcher import Dispatcher
    from flash_wal.events import build_insert, build_insert_plain
    from flash_wal.table_name import TableName
    from flash_wal.pgoutput import Column, Relation
    from flash_wal.pgoutput.fields import read_tuple, read_tuple_plain

    # The tuple as an Insert frame holds it: after the type byte, relid and b"N".
    frame = b"I\0\0\x40\0N" + len(ROW).to_bytes(2, "big") + b"".join(
        b"t" + len(value).to_bytes(4, "big") + value for value in ROW)
    relation = Relation(None, 16384, "public", "bench", "d",
                        tuple(Column(name, oid, -1, name == "id") for name, oid in COLUMNS))
    decoder = RowDecoder(relation, TypeCasters(cursor))
    row = decoder.decode(ROW)
    meta = ("public.bench", 0x16B3748, 0x16B37A0, 750, NOW)
    # Two listeners on the table, as an application with an audit log and a cache has;
    # their worker runs the (empty) callbacks meanwhile, as it would.
    dispatcher = Dispatcher(max_queued_events=1 << 40)
    for _ in range(2):
        listener = Listener(table="bench")
        listener.on(Operation.INSERT, lambda event: None)
        dispatcher.attach(listener)
    txn, table = dispatcher.begin(0x16B37A0, 750, NOW), TableName("public", "bench")
    return [
        ("read a tuple (fields.read_tuple)",
         lambda: read_tuple(frame, 6), lambda: read_tuple_plain(frame, 6)),
        ("decode a row (RowDecoder.decode)",
         lambda: decoder.decode(ROW), lambda: decoder.decode_plain(ROW)),
        ("build an event (events.build_insert)",
         lambda: build_insert(*meta, row), lambda: build_insert_plain(*meta, row)),
        ("dispatch a change (Dispatcher.change)",
         lambda: dispatcher.change(txn, Operation.INSERT, table, 0x16B3748, None, row),
         lambda: dispatcher.change_plainly(txn, Operation.INSERT, table, 0x16B3748, None, row)),
    ]


def measure(cursor: Any, rounds: int, number: int) -> List[Dict[str, Any]]:
    results = []
    for name, fast, plain in pairs(cursor):
        times: Dict[str, List[float]] = {"fast": [], "plain": []}
        for round_ in range(rounds):
            order = [("fast", fast), ("plain", plain)]
            for kind, function in order if round_ % 2 == 0 else reversed(order):
                times[kind].append(timeit.timeit(function, number=number) / number * 1e9)
        best_fast, best_plain = min(times["fast"]), min(times["plain"])
        results.append({"name": name, "fast_ns": best_fast, "plain_ns": best_plain,
                        "saved_ns": best_plain - best_fast, "ratio": best_plain / best_fast})
    return results


def report(results: List[Dict[str, Any]]) -> None:
    print(f"{'hot function':40} {'fast':>8} {'plain':>8} {'saved':>8} {'plain/fast':>10}")
    for result in results:
        print(f"{result['name']:40} {result['fast_ns']:6.0f}ns {result['plain_ns']:6.0f}ns "
              f"{result['saved_ns']:6.0f}ns {result['ratio']:10.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds of each (default 10)")
    parser.add_argument("--number", type=int, default=100_000, help="calls per round (default 100,000)")
    parser.add_argument("--dsn", help="a server to take the casters' cursor from (default: an embedded one)")
    args = parser.parse_args()
    if args.dsn:
        run(args.dsn, args)
        return 0
    from flash_wal.embedded import EmbeddedPostgres

    with EmbeddedPostgres(os.environ.get("FLASH_WAL_BENCH_PG_BIN") or None) as server:
        run(server.dsn, args)
    return 0


def run(dsn: str, args: argparse.Namespace) -> None:
    from flash_wal.decoding import SESSION_SETTINGS

    conn = psycopg2.connect(dsn, options=" ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS.items()))
    try:
        print(f"Python {sys.version.split()[0]}, {args.rounds} alternating rounds of "
              f"{args.number:,} calls, best round of each:")
        report(measure(conn.cursor(), args.rounds, args.number))
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
