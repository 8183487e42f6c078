"""flash_wal's benchmark: throughput against raw psycopg2, latency, memory, idle cost.

    python benchmarks/bench.py [--quick] [--json PATH] [--only NAME,...]

Starts an embedded PostgreSQL (FLASH_WAL_BENCH_PG_BIN=/path/to/bin for another
one) and measures, in one run, each figure in a process of its own:

throughput  one transaction of --rows rows (bigint, int, text, timestamptz, numeric),
            read after it committed (a) by a bare psycopg2 LogicalReplicationConnection
            loop with decode=False from a slot of its own, (b) by flash_wal delivering
            every event, typed, to a no-op callback; events/s from the first change
            received to the last, the best of --rounds alternating reads of each, and
            the ratio b/a.
latency     single-row INSERT transactions at --rate per second for --latency-seconds;
            the time from each COMMIT returning in the writer to its callback starting
            in the consumer (both read CLOCK_MONOTONIC); p50, p99, max.
memory      peak RSS growth of the consumer over one --memory-rows transaction, with
            use_streaming off and on.
idle        CPU seconds a started client uses over --idle-seconds with no changes.
tenants     a --tenant-rows backlog drained by 1, 10, 100 and 1,000 listeners, each
            Condition("tenant_id", i): changes/s and the ratio to one listener
            (benchmarks/tenants.py says how and why).
filters     --filter-rows updated rows and a listener matching 1 %, with server_filters
            off and on; an UPDATE-only listener under an INSERT workload with and
            without per-operation publishing: changes/s, events/s and bytes received
            (benchmarks/filters.py).
aio         the throughput transaction drained by a threaded no-op callback, an async
            no-op callback and an events() iterator: the asyncio rates as ratios to
            the threaded one; and the latency above to a coroutine callback
            (benchmarks/aio.py).

Prints a table, writes the figures as JSON (default benchmarks/results.json) and exits
with status 1 if a target is missed. See docs/performance.rst.
"""

import argparse
import json
import os
import resource
import select
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

import psycopg2
import psycopg2.extras
from psycopg2 import sql

import aio
import filters
import tenants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = "bench"
COLUMNS = "id bigint, n int, t text, ts timestamptz, x numeric"
FILL = "SELECT i, i %% 1000, 'text number ' || i, now(), i * 1.5 FROM generate_series(1, %s) i"
RAW_SLOT, RAW_PUBLICATION = "bench_raw", "bench_raw_publication"
FLASH_SLOT, FLASH_PREFIX = "bench_flash", "bench"

TARGETS = {
    "throughput_ratio": (">=", 0.6),
    "latency_p50_ms": ("<=", 2.0),
    "latency_p99_ms": ("<=", 10.0),
    "memory_streaming_off_mib": ("<=", 64.0),
    "memory_streaming_on_mib": ("<=", 64.0),
    "idle_cpu_percent": ("<=", 1.0),
    **tenants.TARGETS,
    **filters.TARGETS,
    **aio.TARGETS,
}


# --- the measuring processes ----------------------------------------------------------


def emit(result: Dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def flash_driver(slot: str = FLASH_SLOT, **options: Any):
    from flash_wal.drivers.wal_logical import Driver, DriverConfig

    return Driver(DriverConfig(replication_slot=slot, publication_slot_prefix=FLASH_PREFIX, **options))


def flash_client(dsn: str, slot: str = FLASH_SLOT, **driver_options: Any):
    from flash_wal import Client

    return Client(database_cnx=dsn, driver=flash_driver(slot, **driver_options))


def child_raw(dsn: str, rows: int) -> None:
    """Read the backlog as fast as psycopg2 can hand it over, decoding nothing."""
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cursor = conn.cursor()
    cursor.start_replication(slot_name=RAW_SLOT, decode=False, options={
        "proto_version": "1", "publication_names": RAW_PUBLICATION})
    seen, first = 0, None
    while seen < rows:
        message = cursor.read_message()
        if message is None:
            select.select([cursor], [], [], 1.0)
            continue
        if message.payload[:1] == b"I":
            if first is None:
                first = time.perf_counter()
            seen += 1
    emit({"events_per_second": rows / (time.perf_counter() - first)})
    conn.close()


def child_flash(dsn: str, rows: int, slot: str) -> None:
    """Resume a durable slot made before the transaction; every event, typed."""
    from flash_wal import Operation

    client = flash_client(dsn, slot, durable=True)
    seen, first, done = [0], [0.0], threading.Event()

    @client.on(TABLE, Operation.INSERT)
    def count(event):
        if not seen[0]:
            first[0] = time.perf_counter()
        seen[0] += 1
        if seen[0] == rows:
            done.set()

    with client:
        if not done.wait(600):
            raise SystemExit(f"only {seen[0]} of {rows} events arrived")
        emit({"events_per_second": rows / (time.perf_counter() - first[0])})


def child_latency(dsn: str, count: int) -> None:
    """Note when each callback starts; report once ``count`` have."""
    from flash_wal import Operation

    client = flash_client(dsn)
    started: Dict[int, float] = {}
    done = threading.Event()

    @client.on(TABLE, Operation.INSERT)
    def note(event):
        started[event.new["id"]] = time.perf_counter()
        if len(started) == count:
            done.set()

    with client:
        emit({"ready": True})
        if not done.wait(600):
            raise SystemExit(f"only {len(started)} of {count} events arrived")
    emit({"started": started})


def child_memory(dsn: str, rows: int, streaming: bool) -> None:
    from flash_wal import Operation

    client = flash_client(dsn, use_streaming=streaming)
    seen, done = [0], threading.Event()

    @client.on(TABLE, Operation.INSERT)
    def count(event):
        seen[0] += 1
        if seen[0] == rows:
            done.set()

    with client:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
        baseline = rss_kib("VmRSS")
        emit({"ready": True})
        if not done.wait(1800):
            raise SystemExit(f"only {seen[0]} of {rows} events arrived")
        peak = rss_kib("VmHWM")
    emit({"growth_mib": (peak - baseline) / 1024})


def child_idle(dsn: str, seconds: float) -> None:
    from flash_wal import Operation

    client = flash_client(dsn)
    client.on(TABLE, Operation.INSERT)(lambda event: None)
    with client:
        before, began = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        client.wait(seconds)
        after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - began
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    emit({"cpu_seconds": cpu, "seconds": elapsed})


CHILDREN = {"raw": child_raw, "flash": child_flash, "latency": child_latency,
            "memory": child_memory, "idle": child_idle, "tenants": tenants.child_tenants,
            "filters": filters.child_filters, "aio": aio.child_aio, "aio_latency": aio.child_aio_latency}


# --- the conductor --------------------------------------------------------------------


class Child:
    def __init__(self, kind: str, *args: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", kind, *map(json.dumps, args)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )

    def read(self) -> Dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.proc.args[3]} process failed (exit {self.proc.wait()})")
        return json.loads(line)

    def result(self) -> Dict[str, Any]:
        result = self.read()
        self.proc.wait(60)
        return result


def execute(dsn: str, query: Any, params: Any = None) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        conn.cursor().execute(query, params)
    finally:
        conn.close()


def reset_table(dsn: str) -> None:
    execute(dsn, sql.SQL("TRUNCATE {}").format(sql.Identifier(TABLE)))


def make_durable_slots(dsn: str, slots: Any, table: str) -> None:
    """Durable slots, one per reader, whose publication holds ``table``: each reads a
    backlog committed after this once."""
    for slot in slots:
        client = flash_client(dsn, slot, durable=True)
        client.on(table)(lambda event: None)  # before start(): the publication must hold the table
        with client:
            pass


def measure_throughput(dsn: str, rows: int, rounds: int) -> Dict[str, float]:
    """The best of ``rounds`` alternating reads of each kind, so that a moment of load
    on the shared machine does not decide the ratio."""
    # Every slot exists before the transaction, and each reads it once committed. The
    # raw loop acknowledges nothing, so its slot can be read again; flash_wal
    # acknowledges, so it gets a durable slot per round.
    replication = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    replication.cursor().create_replication_slot(RAW_SLOT, output_plugin="pgoutput")
    replication.close()
    execute(dsn, sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
        sql.Identifier(RAW_PUBLICATION), sql.Identifier(TABLE)))
    slots = [f"{FLASH_SLOT}_{i}" for i in range(rounds)]
    raw, flash = [], []
    try:
        for slot in slots:
            client = flash_client(dsn, slot, durable=True)
            client.on(TABLE)(lambda event: None)  # before start(): the publication must hold the table
            with client:
                pass
        execute(dsn, sql.SQL("INSERT INTO {} " + FILL).format(sql.Identifier(TABLE)), (rows,))
        for slot in slots:
            raw.append(Child("raw", dsn, rows).result()["events_per_second"])
            flash.append(Child("flash", dsn, rows, slot).result()["events_per_second"])
    finally:
        execute(dsn, "SELECT pg_drop_replication_slot(%s)", (RAW_SLOT,))
        execute(dsn, sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(RAW_PUBLICATION)))
        for slot in slots:
            flash_driver(slot).drop(dsn)
        reset_table(dsn)
    return {"raw_events_per_second": max(raw), "flash_events_per_second": max(flash),
            "throughput_ratio": max(flash) / max(raw), "raw_rounds": raw, "flash_rounds": flash}


def write_at_rate(dsn: str, rate: float, count: int) -> List[float]:
    """``count`` single-row INSERT transactions (ids 0, 1, ...) at ``rate`` per second;
    when each COMMIT returned."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cursor = conn.cursor()
    insert = sql.SQL("INSERT INTO {} VALUES (%s, 1, 'x', now(), 1.5)").format(sql.Identifier(TABLE))
    committed: List[float] = []
    began = time.perf_counter()
    for i in range(count):
        pause = began + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        cursor.execute(insert, (i,))
        committed.append(time.perf_counter())
    conn.close()
    return committed


def measure_latency(dsn: str, rate: float, seconds: float) -> Dict[str, float]:
    count = int(rate * seconds)
    consumer = Child("latency", dsn, count)
    consumer.read()  # ready
    committed = write_at_rate(dsn, rate, count)
    started = consumer.result()["started"]
    latencies = sorted((started[str(i)] - committed[i]) * 1000 for i in range(count))
    reset_table(dsn)
    quantiles = statistics.quantiles(latencies, n=100)
    return {"latency_p50_ms": quantiles[49], "latency_p99_ms": quantiles[98], "latency_max_ms": latencies[-1],
            "latency_transactions": count}


def measure_memory(dsn: str, rows: int) -> Dict[str, float]:
    figures = {}
    for streaming in (False, True):
        consumer = Child("memory", dsn, rows, streaming)
        consumer.read()  # ready
        execute(dsn, sql.SQL("INSERT INTO {} " + FILL).format(sql.Identifier(TABLE)), (rows,))
        figures[f"memory_streaming_{'on' if streaming else 'off'}_mib"] = consumer.result()["growth_mib"]
        reset_table(dsn)
    return figures


def measure_idle(dsn: str, seconds: float) -> Dict[str, float]:
    result = Child("idle", dsn, seconds).result()
    return {"idle_cpu_seconds": result["cpu_seconds"],
            "idle_cpu_percent": 100 * result["cpu_seconds"] / result["seconds"]}


def verdict(name: str, value: float) -> str:
    comparison, bound = TARGETS[name]
    met = value >= bound if comparison == ">=" else value <= bound
    return f"target {comparison} {bound:g}: {'met' if met else 'MISSED'}"


def report(figures: Dict[str, Any]) -> bool:
    lines = []
    if "throughput_ratio" in figures:
        lines += [
            ("raw psycopg2 read_message", f"{figures['raw_events_per_second']:,.0f} events/s", "best of "
             + ", ".join(f"{rate:,.0f}" for rate in figures["raw_rounds"])),
            ("flash_wal typed events", f"{figures['flash_events_per_second']:,.0f} events/s", "best of "
             + ", ".join(f"{rate:,.0f}" for rate in figures["flash_rounds"])),
            ("throughput ratio", f"{figures['throughput_ratio']:.2f}", verdict("throughput_ratio", figures["throughput_ratio"])),
        ]
    if "latency_p50_ms" in figures:
        lines += [
            ("latency p50", f"{figures['latency_p50_ms']:.2f} ms", verdict("latency_p50_ms", figures["latency_p50_ms"])),
            ("latency p99", f"{figures['latency_p99_ms']:.2f} ms", verdict("latency_p99_ms", figures["latency_p99_ms"])),
            ("latency max", f"{figures['latency_max_ms']:.2f} ms", ""),
        ]
    for state in ("off", "on"):
        name = f"memory_streaming_{state}_mib"
        if name in figures:
            lines.append((f"peak RSS growth, streaming {state}", f"{figures[name]:.1f} MiB", verdict(name, figures[name])))
    if "idle_cpu_percent" in figures:
        lines.append(("idle CPU", f"{figures['idle_cpu_percent']:.2f} % of a core",
                      verdict("idle_cpu_percent", figures["idle_cpu_percent"])))
    lines += tenants.report_lines(figures, verdict)
    lines += filters.report_lines(figures, verdict)
    lines += aio.report_lines(figures, verdict)
    width = max(len(line[0]) for line in lines)
    for name, value, target in lines:
        print(f"  {name:<{width}}  {value:>20}   {target}")
    return not any("MISSED" in line[2] for line in lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the throughput transaction")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: reads of each kind; the best counts")
    parser.add_argument("--rate", type=float, default=500, help="latency: transactions per second")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--tenant-rows", type=int, default=100_000, help="tenants: rows of the backlog")
    parser.add_argument("--filter-rows", type=int, default=200_000, help="filters: rows updated, rows inserted")
    parser.add_argument("--quick", action="store_true", help="a tenth of every size and duration")
    parser.add_argument("--only", default="throughput,latency,memory,idle,tenants,filters,aio",
                        help="comma-separated measurements")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results.json"), metavar="PATH")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *child_args = args.child
        CHILDREN[kind](*map(json.loads, child_args))
        return 0
    if args.quick:
        args.rows, args.latency_seconds = args.rows // 10, args.latency_seconds / 10
        args.memory_rows, args.idle_seconds = args.memory_rows // 10, args.idle_seconds / 10
        args.tenant_rows //= 10
        args.filter_rows //= 10
    only = set(args.only.split(","))

    from flash_wal.embedded import EmbeddedPostgres

    figures: Dict[str, Any] = {}
    with EmbeddedPostgres(os.environ.get("FLASH_WAL_BENCH_PG_BIN") or None) as server:
        dsn = server.dsn
        execute(dsn, sql.SQL("CREATE TABLE {} (" + COLUMNS + ")").format(sql.Identifier(TABLE)))
        figures["postgresql"] = server.server_version_num
        print(f"PostgreSQL {server.server_version_num}, Python {sys.version.split()[0]}, "
              f"{os.cpu_count()} CPUs")
        if "throughput" in only:
            figures.update(measure_throughput(dsn, args.rows, args.rounds))
        if "latency" in only:
            figures.update(measure_latency(dsn, args.rate, args.latency_seconds))
        if "memory" in only:
            figures.update(measure_memory(dsn, args.memory_rows))
        if "idle" in only:
            figures.update(measure_idle(dsn, args.idle_seconds))
        if "tenants" in only:
            figures.update(tenants.measure_tenants(dsn, args.tenant_rows, args.rounds, execute, Child))
        if "filters" in only:
            figures.update(filters.measure_filters(dsn, args.filter_rows, args.rounds, execute, Child))
        if "aio" in only:
            figures.update(aio.measure_aio(dsn, args.rows, args.rounds, args.rate, args.latency_seconds,
                                           execute, Child))
    met = report(figures)
    figures["sizes"] = {"rows": args.rows, "rate": args.rate, "latency_seconds": args.latency_seconds,
                        "memory_rows": args.memory_rows, "idle_seconds": args.idle_seconds, "tenant_rows": args.tenant_rows,
                        "filter_rows": args.filter_rows}
    with open(args.json, "w") as out:
        json.dump(figures, out, indent=2)
    print(f"figures written to {args.json}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
