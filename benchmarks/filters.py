"""bench.py's ``filters`` measurement: what row filters and per-operation publishing save.

Both read a backlog from durable slots made (with the same listeners) before it was
written, the best of --rounds reads of each kind, alternating, and report how long the
client took from start() to its last event, the backlog's changes per second over that
time, and the bytes the client read from the replication connection
(``stats()["bytes_received"]``; the server's ``pg_stat_replication_slots.total_bytes``
counts changes before publications filter them, so it cannot show this).

row filters   ``bench_filters (id bigint PRIMARY KEY, tenant int, t text)`` holding
              --filter-rows rows, 1 % of them of tenant 0; one transaction updates them
              all. One listener, ``Condition("tenant", 0)`` on UPDATE, so 1 % of the
              updates are events; ``server_filters`` off and on.
publishing    an UPDATE-only listener on ``bench_ops (id bigint, t text)`` while one
              transaction inserts --filter-rows rows, then one row is updated (the
              event the reader waits for); with the publications of this version (one
              per operation: no INSERT is sent) and with the one publication for every
              operation that earlier versions made (every INSERT is sent, and dropped
              by the client).

The server decodes every change in both cases: what is saved is what it sends, and
what the client reads and parses.
"""

import threading
import time
from typing import Any, Callable, Dict, List

from psycopg2 import sql

FILTER_TABLE, FILTER_COLUMNS = "bench_filters", "id bigint PRIMARY KEY, tenant int, t text"
FILTER_FILL = "SELECT i, i %% 100, 'text number ' || i FROM generate_series(1, %s) i"
OPS_TABLE, OPS_COLUMNS = "bench_ops", "id bigint, t text"
OPS_FILL = "SELECT i, 'text number ' || i FROM generate_series(1, %s) i"
SLOT = "bench_filters"
#: kind -> (table, server_filters, earlier version's single publication)
KINDS = {
    "filters_off": (FILTER_TABLE, False, False), "filters_on": (FILTER_TABLE, True, False),
    "publishing_all": (OPS_TABLE, False, True), "publishing_per_operation": (OPS_TABLE, False, False),
}
#: Bytes the client reads for the 1 % listener, with filters against without.
TARGETS = {"filters_bytes_saved": (">=", 5.0)}


def _listen(client: Any, table: str, callback: Callable[[Any], None]) -> None:
    from flash_wal import Condition, Operation

    conditions = [Condition("tenant", 0)] if table == FILTER_TABLE else []
    client.on(table, Operation.UPDATE, conditions=conditions)(callback)


def child_filters(dsn: str, kind: str, slot: str, expected: int) -> None:
    """Resume the slot with the kind's listener; report when ``expected`` events came."""
    from bench import emit, flash_client

    table, server_filters, _ = KINDS[kind]
    client = flash_client(dsn, slot, durable=True, server_filters=server_filters)
    seen, done = [0], threading.Event()

    def count(event: Any) -> None:
        seen[0] += 1
        if seen[0] == expected:
            done.set()

    _listen(client, table, count)
    started = time.perf_counter()
    with client:
        if not done.wait(1800):
            raise SystemExit(f"only {seen[0]} of {expected} events arrived")
        seconds = time.perf_counter() - started
        stats = client.stats()
        emit({"seconds": seconds, "bytes_received": stats["bytes_received"], "events": seen[0]})


def _make_slot(dsn: str, execute: Callable[..., None], kind: str, slot: str) -> None:
    from bench import FLASH_PREFIX, flash_client
    from flash_wal.drivers.wal_logical.ownership import PublicationOwner, publication_name

    table, server_filters, single = KINDS[kind]
    if single:
        # What an earlier version left: one publication for every operation, and its slot.
        name = publication_name(FLASH_PREFIX, slot)
        owner = PublicationOwner(prefix=FLASH_PREFIX, slot=slot, durable=True)
        execute(dsn, sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), sql.Identifier(table)))
        execute(dsn, sql.SQL("COMMENT ON PUBLICATION {} IS %s").format(sql.Identifier(name)), (owner.marker(),))
        execute(dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        return
    client = flash_client(dsn, slot, durable=True, server_filters=server_filters)
    _listen(client, table, lambda event: None)  # the publications the backlog is decoded with
    with client:
        pass


def _measure(dsn: str, rounds: int, execute: Callable[..., None], child: Any, kinds: List[str],
             write: Callable[[], None], expected: int) -> Dict[str, List[Dict[str, float]]]:
    from bench import flash_driver

    slots = {(kind, r): f"{SLOT}_{kind}_{r}" for kind in kinds for r in range(rounds)}
    results: Dict[str, List[Dict[str, float]]] = {kind: [] for kind in kinds}
    try:
        for (kind, _), slot in slots.items():
            _make_slot(dsn, execute, kind, slot)
        write()
        for r in range(rounds):
            for kind in kinds:
                results[kind].append(child("filters", dsn, kind, slots[kind, r], expected).result())
    finally:
        for slot in slots.values():
            flash_driver(slot).drop(dsn)
    return results


def measure_filters(dsn: str, rows: int, rounds: int, execute: Callable[..., None], child: Any) -> Dict[str, Any]:
    for table, columns in ((FILTER_TABLE, FILTER_COLUMNS), (OPS_TABLE, OPS_COLUMNS)):
        execute(dsn, sql.SQL("CREATE TABLE {} (" + columns + ")").format(sql.Identifier(table)))
    execute(dsn, sql.SQL("INSERT INTO {} " + FILTER_FILL).format(sql.Identifier(FILTER_TABLE)), (rows,))
    try:
        results = _measure(
            dsn, rounds, execute, child, ["filters_off", "filters_on"],
            lambda: execute(dsn, sql.SQL("UPDATE {} SET t = t || '.'").format(sql.Identifier(FILTER_TABLE))),
            rows // 100,
        )

        def write_ops() -> None:
            execute(dsn, sql.SQL("INSERT INTO {} " + OPS_FILL).format(sql.Identifier(OPS_TABLE)), (rows,))
            execute(dsn, sql.SQL("UPDATE {} SET t = 'the one update' WHERE id = 1").format(sql.Identifier(OPS_TABLE)))

        results.update(_measure(dsn, rounds, execute, child, ["publishing_all", "publishing_per_operation"],
                                write_ops, 1))
    finally:
        for table in (FILTER_TABLE, OPS_TABLE):
            execute(dsn, sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    figures: Dict[str, Any] = {"filters_rows": rows, "filters_rounds": results}
    for kind, reads in results.items():
        best = min(reads, key=lambda read: read["seconds"])
        figures[f"{kind}_seconds"] = best["seconds"]
        figures[f"{kind}_changes_per_second"] = rows / best["seconds"]
        figures[f"{kind}_events_per_second"] = best["events"] / best["seconds"]
        figures[f"{kind}_bytes_received"] = best["bytes_received"]
    figures["filters_bytes_saved"] = figures["filters_off_bytes_received"] / figures["filters_on_bytes_received"]
    figures["publishing_bytes_saved"] = (figures["publishing_all_bytes_received"]
                                         / figures["publishing_per_operation_bytes_received"])
    return figures


def report_lines(figures: Dict[str, Any], verdict: Callable[[str, float], str]) -> List[Any]:
    if "filters_bytes_saved" not in figures:
        return []
    names = {"filters_off": "1 % listener, server_filters off", "filters_on": "1 % listener, server_filters on",
             "publishing_all": "UPDATE listener, all operations published",
             "publishing_per_operation": "UPDATE listener, per-operation publishing"}
    lines = []
    for kind, name in names.items():
        lines.append((name, f"{figures[f'{kind}_changes_per_second']:,.0f} changes/s",
                      f"{figures[f'{kind}_events_per_second']:,.0f} events/s, "
                      f"{figures[f'{kind}_bytes_received'] / 2**20:,.1f} MiB received, "
                      f"{figures[f'{kind}_seconds']:.2f} s"))
    lines.append(("bytes saved by server_filters", f"{figures['filters_bytes_saved']:.0f}x",
                  verdict("filters_bytes_saved", figures["filters_bytes_saved"])))
    lines.append(("bytes saved by per-operation publishing", f"{figures['publishing_bytes_saved']:.0f}x", ""))
    return lines
