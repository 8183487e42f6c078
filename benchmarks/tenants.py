"""bench.py's ``tenants`` measurement: what routing costs as listeners are added.

One table ``bench_tenants (id bigint, tenant_id int, t text)`` and one transaction of
--tenant-rows rows, committed before anyone reads it, drained from a durable slot of
its own by a client with N listeners, listener i holding ``Condition("tenant_id", i)``,
for N = 1, 10, 100, 1,000; changes/s from the first event to the last, the best of
--rounds alternating reads of each N, and each N's rate as a ratio to N = 1.

Every row belongs to tenant 0, whose listener is there for every N: the backlog, the
events delivered (one per row) and the callback work are the same for every N, and
only the number of listeners the dispatcher has to consider changes. Spreading the
rows over the N tenants would also change how many worker threads wake and how full
each batch is, which measures threads, not routing.

Kept beside bench.py (which imports it) so that each measurement stays readable.
"""

import threading
import time
from typing import Any, Callable, Dict, List

from psycopg2 import sql

TABLE = "bench_tenants"
COLUMNS = "id bigint, tenant_id int, t text"
FILL = "SELECT i, 0, 'text number ' || i FROM generate_series(1, %s) i"
SLOT = "bench_tenants"
LISTENER_COUNTS = (1, 10, 100, 1000)
#: The drain rate with the most listeners, against the rate with one.
TARGETS = {"tenants_ratio": (">=", 0.7)}


def child_tenants(dsn: str, rows: int, slot: str, listeners: int) -> None:
    """Resume a durable slot made before the transaction, with ``listeners`` tenant listeners."""

    from flash_wal import Condition, Listener, Operation

    from bench import emit, flash_client

    client = flash_client(dsn, slot, durable=True)
    seen, first, done = [0], [0.0], threading.Event()

    def count(event: Any) -> None:
        if not seen[0]:
            first[0] = time.perf_counter()
        seen[0] += 1
        if seen[0] == rows:
            done.set()

    tenant_listeners = [Listener(table=TABLE, conditions=[Condition("tenant_id", tenant)])
                        for tenant in range(listeners)]
    for listener in tenant_listeners:
        listener.on(Operation.INSERT, count)
    client.attach(*tenant_listeners)
    with client:
        if not done.wait(1800):
            raise SystemExit(f"only {seen[0]} of {rows} events arrived")
        emit({"changes_per_second": rows / (time.perf_counter() - first[0])})


def measure_tenants(dsn: str, rows: int, rounds: int, execute: Callable[..., None], child: Any) -> Dict[str, Any]:
    """The best of ``rounds`` reads for each listener count, alternating the counts
    within a round so that a moment of load on the shared machine hits them alike."""
    from bench import flash_client, flash_driver

    execute(dsn, sql.SQL("CREATE TABLE {} (" + COLUMNS + ")").format(sql.Identifier(TABLE)))
    slots = {(count, r): f"{SLOT}_{count}_{r}" for count in LISTENER_COUNTS for r in range(rounds)}
    rates: Dict[int, List[float]] = {count: [] for count in LISTENER_COUNTS}
    try:
        for slot in slots.values():
            client = flash_client(dsn, slot, durable=True)
            client.on(TABLE)(lambda event: None)  # before start(): the publication must hold the table
            with client:
                pass
        execute(dsn, sql.SQL("INSERT INTO {} " + FILL).format(sql.Identifier(TABLE)), (rows,))
        for r in range(rounds):
            for count in LISTENER_COUNTS:
                result = child("tenants", dsn, rows, slots[count, r], count).result()
                rates[count].append(result["changes_per_second"])
    finally:
        for slot in slots.values():
            flash_driver(slot).drop(dsn)
        execute(dsn, sql.SQL("DROP TABLE {}").format(sql.Identifier(TABLE)))
    figures: Dict[str, Any] = {"tenants_rows": rows, "tenants_rounds": {str(c): rates[c] for c in LISTENER_COUNTS}}
    one = max(rates[1])
    for count in LISTENER_COUNTS:
        figures[f"tenants_{count}_changes_per_second"] = max(rates[count])
    figures["tenants_ratio"] = max(rates[LISTENER_COUNTS[-1]]) / one
    return figures


def report_lines(figures: Dict[str, Any], verdict: Callable[[str, float], str]) -> List[Any]:
    if "tenants_ratio" not in figures:
        return []
    one = figures["tenants_1_changes_per_second"]
    lines = []
    for count in LISTENER_COUNTS:
        rate = figures[f"tenants_{count}_changes_per_second"]
        rounds = ", ".join(f"{value:,.0f}" for value in figures["tenants_rounds"][str(count)])
        lines.append((f"{count:,} tenant listener{'s' if count > 1 else ''}", f"{rate:,.0f} changes/s",
                      f"{rate / one:.2f} of 1; best of {rounds}"))
    lines.append((f"tenants ratio {LISTENER_COUNTS[-1]:,} / 1", f"{figures['tenants_ratio']:.2f}",
                  verdict("tenants_ratio", figures["tenants_ratio"])))
    return lines
