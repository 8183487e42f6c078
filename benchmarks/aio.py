"""bench.py's ``aio`` measurement: flash_wal.aio against the threaded client.

One transaction of --rows rows in bench.py's table, committed before anyone reads it,
drained from a durable slot of its own by (a) a threaded Client with a no-op callback (bench.py's throughput reader),
(b) an AsyncClient with an ``async def`` no-op callback, (c) an AsyncClient's
``events()`` iterator doing nothing with each event; events/s from the first event to
the last, the best of --rounds alternating reads of each, and b/a and c/a. Then the
latency of bench.py (single-row INSERTs at --rate per second, COMMIT returning in the
writer to the coroutine callback starting, both on CLOCK_MONOTONIC): p50, p99, max.

Kept beside bench.py (which imports it) so that each measurement stays readable.
"""

import asyncio
import statistics
import time
from typing import Any, Callable, Dict, List

from psycopg2 import sql

KINDS = ("threaded", "coroutine", "events")
#: Each asyncio rate against the threaded client's, in the same run.
TARGETS = {"aio_callback_ratio": (">=", 0.8), "aio_events_ratio": (">=", 0.8),
           "aio_latency_p50_ms": ("<=", 2.0), "aio_latency_p99_ms": ("<=", 10.0)}


def async_client(dsn: str, slot: str, **driver_options: Any) -> Any:
    from flash_wal.aio import AsyncClient

    from bench import flash_driver

    return AsyncClient(database_cnx=dsn, driver=flash_driver(slot, **driver_options))


def child_aio(dsn: str, rows: int, slot: str, kind: str) -> None:
    """Resume a durable slot made before the transaction; every event, typed, to a
    coroutine callback (``kind`` "coroutine") or through events() ("events")."""
    from flash_wal import Operation

    from bench import TABLE, emit

    async def main() -> float:
        client = async_client(dsn, slot, durable=True)
        seen, first = [0], [0.0]
        finished = asyncio.Event()
        if kind == "coroutine":
            @client.on(TABLE, Operation.INSERT)
            async def count(event: Any) -> None:
                if not seen[0]:
                    first[0] = time.perf_counter()
                seen[0] += 1
                if seen[0] == rows:
                    finished.set()

            async with client:
                await asyncio.wait_for(finished.wait(), 600)
                return rows / (time.perf_counter() - first[0])
        changes = client.events(TABLE, Operation.INSERT)  # before start(): the backlog is committed
        async with client:
            async for _event in changes:
                if not seen[0]:
                    first[0] = time.perf_counter()
                seen[0] += 1
                if seen[0] == rows:
                    break
            return rows / (time.perf_counter() - first[0])

    emit({"events_per_second": asyncio.run(main())})


def child_aio_latency(dsn: str, count: int) -> None:
    """Note when each coroutine callback starts; report once ``count`` have."""
    from flash_wal import Operation

    from bench import TABLE, emit

    async def main() -> Dict[int, float]:
        client = async_client(dsn, "bench_aio_latency")
        started: Dict[int, float] = {}
        finished = asyncio.Event()

        @client.on(TABLE, Operation.INSERT)
        async def note(event: Any) -> None:
            started[event.new["id"]] = time.perf_counter()
            if len(started) == count:
                finished.set()

        async with client:
            emit({"ready": True})
            await asyncio.wait_for(finished.wait(), 600)
        return started

    emit({"started": asyncio.run(main())})


def measure_aio(dsn: str, rows: int, rounds: int, rate: float, seconds: float,
                execute: Callable[..., None], child: Any) -> Dict[str, Any]:
    """The best of ``rounds`` reads of each kind, alternating within a round, then the latency."""
    from bench import TABLE, FILL, flash_driver, make_durable_slots, reset_table, write_at_rate

    slots = {(kind, r): f"bench_aio_{kind}_{r}" for kind in KINDS for r in range(rounds)}
    rates: Dict[str, List[float]] = {kind: [] for kind in KINDS}
    try:
        make_durable_slots(dsn, slots.values(), TABLE)
        execute(dsn, sql.SQL("INSERT INTO {} " + FILL).format(sql.Identifier(TABLE)), (rows,))
        for r in range(rounds):
            for kind in KINDS:
                reader = ("flash", dsn, rows, slots[kind, r]) if kind == "threaded" else (
                    "aio", dsn, rows, slots[kind, r], kind)
                rates[kind].append(child(*reader).result()["events_per_second"])
    finally:
        for slot in slots.values():
            flash_driver(slot).drop(dsn)
        reset_table(dsn)
    figures: Dict[str, Any] = {"aio_rounds": rates}
    threaded = max(rates["threaded"])
    figures["aio_threaded_events_per_second"] = threaded
    figures["aio_callback_events_per_second"] = max(rates["coroutine"])
    figures["aio_events_events_per_second"] = max(rates["events"])
    figures["aio_callback_ratio"] = max(rates["coroutine"]) / threaded
    figures["aio_events_ratio"] = max(rates["events"]) / threaded

    count = int(rate * seconds)
    consumer = child("aio_latency", dsn, count)
    consumer.read()  # ready
    committed = write_at_rate(dsn, rate, count)
    started = consumer.result()["started"]
    latencies = sorted((started[str(i)] - committed[i]) * 1000 for i in range(count))
    reset_table(dsn)
    quantiles = statistics.quantiles(latencies, n=100)
    figures.update({"aio_latency_p50_ms": quantiles[49], "aio_latency_p99_ms": quantiles[98],
                    "aio_latency_max_ms": latencies[-1]})
    return figures


def report_lines(figures: Dict[str, Any], verdict: Callable[[str, float], str]) -> List[Any]:
    if "aio_callback_ratio" not in figures:
        return []

    def rounds(kind: str) -> str:
        return "best of " + ", ".join(f"{value:,.0f}" for value in figures["aio_rounds"][kind])

    return [
        ("threaded client, no-op callback", f"{figures['aio_threaded_events_per_second']:,.0f} events/s",
         rounds("threaded")),
        ("AsyncClient, async no-op callback", f"{figures['aio_callback_events_per_second']:,.0f} events/s",
         rounds("coroutine")),
        ("AsyncClient.events()", f"{figures['aio_events_events_per_second']:,.0f} events/s", rounds("events")),
        ("async callback / threaded", f"{figures['aio_callback_ratio']:.2f}",
         verdict("aio_callback_ratio", figures["aio_callback_ratio"])),
        ("events() / threaded", f"{figures['aio_events_ratio']:.2f}",
         verdict("aio_events_ratio", figures["aio_events_ratio"])),
        ("async callback latency p50", f"{figures['aio_latency_p50_ms']:.2f} ms",
         verdict("aio_latency_p50_ms", figures["aio_latency_p50_ms"])),
        ("async callback latency p99", f"{figures['aio_latency_p99_ms']:.2f} ms",
         verdict("aio_latency_p99_ms", figures["aio_latency_p99_ms"])),
        ("async callback latency max", f"{figures['aio_latency_max_ms']:.2f} ms", ""),
    ]
