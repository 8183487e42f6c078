"""What users feel: a durable client draining a committed backlog, against the wire.

Each workload is a backlog committed on slots made before the writes; it is read by
(a) a bare psycopg2 LogicalReplicationConnection loop with decode=False and (b) a
durable flash_wal client whose callback reads every value of every row (``old`` too
for updates), each in a process of its own, timed from connect / ``start()`` to the
last event. Rounds alternate raw and flash_wal; the medians and each round's ratio
are reported.

W1  one transaction of --w1-rows INSERTs, 5 columns
W2  --w2-transactions transactions of 10 INSERTs
W3  one transaction of --w3-rows UPDATEs of a 10-column table, REPLICA IDENTITY FULL
    (old and new row)

Also here: commit-to-callback latency at --rate transactions/s while a backlog of
--w1-rows rows drains, and the peak RSS growth while a transaction of 2,000 rows of
1 MiB each is delivered (max_queued_bytes at work).
"""

import select
import statistics
import threading
import time
from typing import Any, Callable, Dict, List

import psycopg2
import psycopg2.extras
from psycopg2 import sql

TARGETS = {
    "W1_ratio": (">=", 0.7),
    "W2_ratio": (">=", 0.8),
    "W3_ratio": (">=", 0.55),
    "big_rows_memory_mib": ("<=", 150.0),
}

FIVE = "id bigint, n int, t text, ts timestamptz, x numeric"
TEN = FIVE + ", a bigint, b text, c timestamptz, d numeric, e boolean"
FILL_FIVE = "SELECT i, i % 1000, 'text number ' || i, now(), i * 1.5 FROM generate_series(1, {rows}) i"
FILL_TEN = ("SELECT i, i % 1000, 'text number ' || i, now(), i * 1.5, i * 7, 'more text ' || i, now(), "
            "i / 3.0, i % 2 = 0 FROM generate_series(1, {rows}) i")
# 10 rows per transaction, each its own commit: a DO block may COMMIT (PostgreSQL 11+).
FILL_MANY = ("DO $$ BEGIN FOR j IN 0..{last} LOOP "
             "INSERT INTO {table} SELECT i, i % 1000, 'text number ' || i, now(), i * 1.5 "
             "FROM generate_series(j * 10 + 1, j * 10 + 10) i; COMMIT; END LOOP; END $$")

#: name -> (table, columns, operation, SQL run before the slots exist, SQL of the backlog)
WORKLOADS: Dict[str, Any] = {
    "W1": ("bench_w1", FIVE, "INSERT", None, "INSERT INTO bench_w1 " + FILL_FIVE),
    "W2": ("bench_w2", FIVE, "INSERT", None, FILL_MANY),
    "W3": ("bench_w3", TEN, "UPDATE", "INSERT INTO bench_w3 " + FILL_TEN,
           "UPDATE bench_w3 SET n = n + 1"),
}
RAW_PUBLICATION = "bench_backlog_raw"


# --- the measuring processes ----------------------------------------------------------


def child_raw_backlog(dsn: str, slot: str, publication: str, events: int) -> Dict[str, Any]:
    """Read the backlog as fast as psycopg2 hands it over, decoding nothing."""
    began = time.perf_counter()
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cursor = conn.cursor()
    cursor.start_replication(slot_name=slot, decode=False, options={
        "proto_version": "1", "publication_names": publication})
    seen = 0
    while seen < events:
        message = cursor.read_message()
        if message is None:
            select.select([cursor], [], [], 1.0)
            continue
        if message.payload[:1] in (b"I", b"U"):
            seen += 1
    elapsed = time.perf_counter() - began
    conn.close()
    return {"events_per_second": events / elapsed}


def durable_client(dsn: str, slot: str, **config: Any) -> Any:
    from flash_wal import Client
    from flash_wal.drivers.wal_logical import Driver, DriverConfig

    return Client(database_cnx=dsn, driver=Driver(DriverConfig(
        replication_slot=slot, publication_slot_prefix=slot, durable=True)), **config)


def child_flash_backlog(dsn: str, slot: str, table: str, operation: str, events: int) -> Dict[str, Any]:
    """Resume a durable slot made before the backlog; every value of every row read."""
    from flash_wal import Operation

    client = durable_client(dsn, slot)
    seen, last, done = [0], [0.0], threading.Event()

    if operation == "UPDATE":
        def read(event: Any) -> None:
            for _value in event.new.values():
                pass
            for _value in event.old.values():
                pass
            seen[0] += 1
            if seen[0] == events:
                last[0] = time.perf_counter()
                done.set()
    else:
        def read(event: Any) -> None:
            for _value in event.new.values():
                pass
            seen[0] += 1
            if seen[0] == events:
                last[0] = time.perf_counter()
                done.set()

    client.on(table, Operation[operation])(read)
    began = time.perf_counter()
    with client:
        started = time.perf_counter()
        if not done.wait(900):
            raise SystemExit(f"only {seen[0]} of {events} events arrived")
    return {"events_per_second": events / (last[0] - began), "start_seconds": started - began}


def child_latency_under_backlog(dsn: str, slot: str, backlog: int, count: int, emit: Callable) -> Dict[str, Any]:
    """Drain the backlog of bench_w1 while latency rows arrive in bench_latency."""
    from flash_wal import Operation

    client = durable_client(dsn, slot)
    started: Dict[int, float] = {}
    drained, done = [0.0], threading.Event()
    seen = [0]

    @client.on("bench_w1", Operation.INSERT)
    def backlog_row(event: Any) -> None:
        for _value in event.new.values():
            pass
        seen[0] += 1
        if seen[0] == backlog:
            drained[0] = time.perf_counter()

    @client.on("bench_latency", Operation.INSERT)
    def note(event: Any) -> None:
        started[event.new["id"]] = time.perf_counter()
        if len(started) == count:
            done.set()

    began = time.perf_counter()
    with client:
        emit({"ready": True})
        if not done.wait(900):
            raise SystemExit(f"only {len(started)} of {count} latency rows arrived")
    return {"started": started, "drain_seconds": drained[0] - began}


def child_big_rows(dsn: str, slot: str, rows: int, emit: Callable) -> Dict[str, Any]:
    """Peak RSS growth while ``rows`` rows of 1 MiB each are delivered."""
    from flash_wal import Operation

    client = durable_client(dsn, slot)
    seen, done, length = [0], threading.Event(), [0]

    @client.on("bench_big", Operation.INSERT)
    def read(event: Any) -> None:
        for value in event.new.values():
            if isinstance(value, str):
                length[0] = len(value)
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
    return {"growth_mib": (peak - baseline) / 1024, "value_length": length[0]}


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


# --- the conductor --------------------------------------------------------------------


def make_slot(dsn: str, slot: str, table: str) -> None:
    """A durable flash_wal slot and publication for ``table``, made before the writes."""
    client = durable_client(dsn, slot)
    client.on(table)(lambda event: None)
    with client:
        pass


def drop_slot(dsn: str, slot: str) -> None:
    from flash_wal.drivers.wal_logical import Driver, DriverConfig

    Driver(DriverConfig(replication_slot=slot, publication_slot_prefix=slot, durable=True)).drop(dsn)


def measure_workload(name: str, rounds: int, sizes: Dict[str, int], dsn: str, execute: Callable,
                     child: Callable) -> Dict[str, Any]:
    table, columns, operation, before, backlog = WORKLOADS[name]
    events = {"W1": sizes["w1_rows"], "W2": sizes["w2_transactions"] * 10, "W3": sizes["w3_rows"]}[name]
    execute(dsn, sql.SQL("CREATE TABLE {} (" + columns + ")").format(sql.Identifier(table)))
    raw_slot, slots = f"bench_raw_{name.lower()}", [f"bench_{name.lower()}_{i}" for i in range(rounds)]
    raw, flash = [], []
    try:
        if name == "W3":
            execute(dsn, sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(table)))
            execute(dsn, before.format(rows=events))
        replication = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        replication.cursor().create_replication_slot(raw_slot, output_plugin="pgoutput")
        replication.close()
        execute(dsn, sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(RAW_PUBLICATION), sql.Identifier(table)))
        for slot in slots:
            make_slot(dsn, slot, table)
        execute(dsn, backlog.format(rows=events, last=events // 10 - 1, table=table))
        for slot in slots:
            raw.append(child("raw_backlog", dsn, raw_slot, RAW_PUBLICATION, events).result()["events_per_second"])
            flash.append(child("flash_backlog", dsn, slot, table, operation, events).result()["events_per_second"])
    finally:
        execute(dsn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (raw_slot,))
        execute(dsn, sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(RAW_PUBLICATION)))
        for slot in slots:
            drop_slot(dsn, slot)
        execute(dsn, sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    raw_median, flash_median = statistics.median(raw), statistics.median(flash)
    return {f"{name}_raw_events_per_second": raw_median, f"{name}_flash_events_per_second": flash_median,
            f"{name}_ratio": flash_median / raw_median, f"{name}_raw_rounds": raw, f"{name}_flash_rounds": flash,
            f"{name}_round_ratios": [f / r for f, r in zip(flash, raw)], f"{name}_events": events}


def measure_backlogs(dsn: str, rounds: int, sizes: Dict[str, int], execute: Callable, child: Callable) -> Dict[str, Any]:
    figures: Dict[str, Any] = {}
    for name in WORKLOADS:
        figures.update(measure_workload(name, rounds, sizes, dsn, execute, child))
    return figures


def commit_at_rate(dsn: str, table: str, rate: float, count: int) -> List[float]:
    """INSERT single-row transactions at ``rate`` per second; when each COMMIT returned."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cursor = conn.cursor()
    insert = sql.SQL("INSERT INTO {} VALUES (%s, 1, 'x', now(), 1.5)").format(sql.Identifier(table))
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


def latency_figures(prefix: str, committed: List[float], started: Dict[str, float]) -> Dict[str, Any]:
    latencies = sorted((started[str(i)] - committed[i]) * 1000 for i in range(len(committed)))
    quantiles = statistics.quantiles(latencies, n=100)
    return {f"{prefix}_p50_ms": quantiles[49], f"{prefix}_p99_ms": quantiles[98], f"{prefix}_max_ms": latencies[-1],
            f"{prefix}_all_ms": latencies}


def measure_latency_under_backlog(dsn: str, backlog: int, rate: float, seconds: float, execute: Callable,
                                  child: Callable) -> Dict[str, Any]:
    slot, count = "bench_latency_backlog", int(rate * seconds)
    for table in ("bench_w1", "bench_latency"):
        execute(dsn, sql.SQL("CREATE TABLE {} (" + FIVE + ")").format(sql.Identifier(table)))
    try:
        client = durable_client(dsn, slot)
        client.on("bench_w1")(lambda event: None)
        client.on("bench_latency")(lambda event: None)
        with client:
            pass
        execute(dsn, "INSERT INTO bench_w1 " + FILL_FIVE.format(rows=backlog))
        consumer = child("latency_under_backlog", dsn, slot, backlog, count)
        consumer.read()  # ready: the backlog is being drained
        committed = commit_at_rate(dsn, "bench_latency", rate, count)
        result = consumer.result()
    finally:
        drop_slot(dsn, slot)
        for table in ("bench_w1", "bench_latency"):
            execute(dsn, sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    figures = latency_figures("backlog_latency", committed, result["started"])
    figures["backlog_drain_seconds"] = result["drain_seconds"]
    return figures


def measure_big_rows(dsn: str, rows: int, execute: Callable, child: Callable) -> Dict[str, Any]:
    slot = "bench_big"
    execute(dsn, "CREATE TABLE bench_big (id int, payload text)")
    # Stored as is, never compressed: every row is a full MiB on the wire.
    execute(dsn, "ALTER TABLE bench_big ALTER COLUMN payload SET STORAGE EXTERNAL")
    try:
        make_slot(dsn, slot, "bench_big")
        consumer = child("big_rows", dsn, slot, rows)
        consumer.read()  # ready
        execute(dsn, "INSERT INTO bench_big SELECT i, lpad(i::text, 1048576, 'x') FROM generate_series(1, %s) i",
                (rows,))
        result = consumer.result()
    finally:
        drop_slot(dsn, slot)
        execute(dsn, "DROP TABLE bench_big")
    return {"big_rows_memory_mib": result["growth_mib"], "big_rows": rows}


def report_lines(figures: Dict[str, Any], verdict: Callable[[str, float], str]) -> List[tuple]:
    lines = []
    for name in WORKLOADS:
        if f"{name}_ratio" not in figures:
            continue
        rounds = ", ".join(f"{r:.2f}" for r in figures[f"{name}_round_ratios"])
        lines += [
            (f"{name} raw psycopg2 (median)", f"{figures[f'{name}_raw_events_per_second']:,.0f} events/s",
             ", ".join(f"{r:,.0f}" for r in figures[f"{name}_raw_rounds"])),
            (f"{name} flash_wal (median)", f"{figures[f'{name}_flash_events_per_second']:,.0f} events/s",
             ", ".join(f"{r:,.0f}" for r in figures[f"{name}_flash_rounds"])),
            (f"{name} ratio of medians", f"{figures[f'{name}_ratio']:.2f}",
             f"{verdict(f'{name}_ratio', figures[f'{name}_ratio'])}; rounds {rounds}"),
        ]
    if "backlog_latency_p50_ms" in figures:
        lines += [
            ("latency under backlog p50", f"{figures['backlog_latency_p50_ms']:.2f} ms",
             f"backlog drained in {figures['backlog_drain_seconds']:.1f} s"),
            ("latency under backlog p99", f"{figures['backlog_latency_p99_ms']:.2f} ms", ""),
        ]
    if "big_rows_memory_mib" in figures:
        lines.append((f"peak RSS growth, {figures['big_rows']:,} rows of 1 MiB",
                      f"{figures['big_rows_memory_mib']:.1f} MiB", verdict("big_rows_memory_mib",
                                                                            figures["big_rows_memory_mib"])))
    return lines


def markdown_table(figures: Dict[str, Any]) -> str:
    """The throughput table, as the issue and the docs show it."""
    lines = ["| workload | raw psycopg2 (decode=False) | flash_wal | ratio of medians | ratio per round |",
             "|---|---|---|---|---|"]
    for name in WORKLOADS:
        if f"{name}_ratio" in figures:
            lines.append(
                f"| {name} | {figures[f'{name}_raw_events_per_second']:,.0f}/s "
                f"| {figures[f'{name}_flash_events_per_second']:,.0f}/s | {figures[f'{name}_ratio']:.2f} | "
                + ", ".join(f"{r:.2f}" for r in figures[f"{name}_round_ratios"]) + " |")
    return "\n".join(lines)
