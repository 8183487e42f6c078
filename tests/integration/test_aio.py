"""flash_wal.aio.AsyncClient against the real server: coroutine callbacks on the loop,
events() iterators, acknowledgement after completion, max_parallel, errors,
cancellation, and a loop that stays responsive under a stream of callbacks."""

import asyncio
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest
from psycopg2 import sql

from flash_wal import Operation
from flash_wal.aio import AsyncClient
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.database import Database, confirmed_flush, wait_for_status_updates
from tests.support.waiting import wait_for


@pytest.fixture
def make_async_client(dsn: str, unique: str, db: Database) -> Iterator[Callable[..., AsyncClient]]:
    """AsyncClients with names of their own; the test fails if one left a slot or
    publication behind once closed (each test closes its own, on its loop)."""
    clients: List[AsyncClient] = []

    def make(**options: Any) -> AsyncClient:
        name = f"flash_{unique}_{len(clients)}"
        options.setdefault("driver", Driver(DriverConfig(
            publication_slot_prefix=f"pub_{name}", replication_slot=name, status_interval=1)))
        options.setdefault("shutdown_timeout", 5.0)
        client = AsyncClient(database_cnx=dsn, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        config = client.driver.config
        assert db.slots(config.replication_slot) == [], "slot left behind"
        assert db.publications(config.publication_slot_prefix) == [], "publication left behind"


def insert(db: Database, table: str, titles: List[str]) -> None:
    db.execute(sql.SQL("INSERT INTO {} (title) SELECT unnest(%s::text[])").format(sql.Identifier(table)), (titles,))


async def in_thread(function: Callable[[], Any]) -> Any:
    """Blocking test steps (SQL, waiting on the server) off the loop."""
    return await asyncio.get_running_loop().run_in_executor(None, function)


def test_coroutine_callbacks_run_on_the_loop_in_commit_order(make_async_client, make_table, db):
    table = make_table()
    seen: List[Any] = []

    async def main() -> None:
        client = make_async_client()
        loop_thread = threading.get_ident()

        @client.on(table, Operation.INSERT)
        async def record(event):
            assert threading.get_ident() == loop_thread
            await asyncio.sleep(0)
            seen.append(event.new["title"])

        async with client:
            for batch in range(5):
                await in_thread(lambda: insert(db, table, [f"{batch}-{i}" for i in range(300)]))
            await in_thread(lambda: wait_for(lambda: len(seen) == 1500, what="1500 events"))

    asyncio.run(main())
    assert seen == [f"{batch}-{i}" for batch in range(5) for i in range(300)]


def test_plain_callbacks_run_on_worker_threads(make_async_client, make_table, db):
    table = make_table()
    threads: List[str] = []

    async def main() -> None:
        client = make_async_client()
        client.on(table, Operation.INSERT)(lambda event: threads.append(threading.current_thread().name))
        async with client:
            await in_thread(lambda: insert(db, table, ["a", "b"]))
            await in_thread(lambda: wait_for(lambda: len(threads) == 2, what="two events"))

    asyncio.run(main())
    assert all(name.startswith("flash_wal-") for name in threads), threads


def test_events_iterates_changes_in_order_and_ends_with_break(make_async_client, make_table, db):
    table = make_table()

    async def main() -> List[Any]:
        client = make_async_client()
        async with client:
            received = []

            async def consume() -> None:
                async for event in client.events(table, Operation.INSERT | Operation.DELETE):
                    received.append((event.operation, event.key))
                    if len(received) == 2000:
                        break

            consumer = asyncio.ensure_future(consume())
            await in_thread(lambda: wait_for(lambda: client.listeners, what="the subscription"))
            await in_thread(lambda: insert(db, table, [str(i) for i in range(1000)]))
            await in_thread(lambda: db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table))))
            await asyncio.wait_for(consumer, 30)
            await in_thread(lambda: wait_for(lambda: client.listeners == [], what="the subscription to end"))
            return received

    received = asyncio.run(main())
    assert received == [(Operation.INSERT, (i,)) for i in range(1, 1001)] + [
        (Operation.DELETE, (i,)) for i in range(1, 1001)]


def test_closing_the_client_ends_events_iterations(make_async_client, make_table, db):
    table = make_table()

    async def main() -> List[Any]:
        client = make_async_client()
        await client.start()
        stream = client.events(table, Operation.INSERT)
        await in_thread(lambda: insert(db, table, ["a", "b"]))
        first = await asyncio.wait_for(stream.__anext__(), 15)
        await asyncio.wait_for(client.close(), 10)  # not held up by the event in hand
        rest = [event async for event in stream]
        return [first] + rest

    assert [event.new["title"] for event in asyncio.run(main())] == ["a"]


def test_transaction_is_acknowledged_only_after_its_coroutines_completed(make_async_client, make_table, db):
    table = make_table()

    async def main() -> None:
        client = make_async_client()
        slot = client.driver.config.replication_slot
        started, release = asyncio.Event(), asyncio.Event()
        finished: List[Any] = []

        @client.on(table, Operation.INSERT)
        async def blocking(event):
            started.set()
            await release.wait()
            finished.append(event)

        async with client:
            await in_thread(lambda: insert(db, table, ["a"]))
            await asyncio.wait_for(started.wait(), 15)
            await in_thread(lambda: wait_for_status_updates(db, slot))  # the ack had its chances
            blocked_at = await in_thread(lambda: confirmed_flush(db, slot))
            release.set()
            await in_thread(lambda: wait_for(lambda: finished, what="the callback to finish"))
            commit_lsn = finished[0].commit_lsn
            assert blocked_at <= commit_lsn  # not confirmed while the coroutine was blocked
            await in_thread(lambda: wait_for(lambda: confirmed_flush(db, slot) > commit_lsn,
                                             what="the transaction to be confirmed"))

    asyncio.run(main())


def test_events_acknowledges_once_the_next_event_is_asked_for(make_async_client, make_table, db):
    table = make_table()

    async def main() -> None:
        client = make_async_client()
        slot = client.driver.config.replication_slot
        async with client:
            stream = client.events(table, Operation.INSERT)
            await in_thread(lambda: insert(db, table, ["a"]))
            event = await asyncio.wait_for(stream.__anext__(), 15)
            await in_thread(lambda: wait_for_status_updates(db, slot))
            held_at = await in_thread(lambda: confirmed_flush(db, slot))
            assert held_at <= event.commit_lsn  # handed out, not yet done with
            asking = asyncio.ensure_future(stream.__anext__())
            await in_thread(lambda: wait_for(lambda: confirmed_flush(db, slot) > event.commit_lsn,
                                             what="the transaction to be confirmed"))
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking

    asyncio.run(main())


@pytest.mark.parametrize("max_parallel, expected", [(1, 1), (2, 2), (-1, 6)])
def test_max_parallel_bounds_running_coroutines(make_async_client, make_table, db, max_parallel, expected):
    table = make_table()

    async def main() -> int:
        client = make_async_client()
        gate = asyncio.Event()
        running, most = [0], [0]

        @client.on(table, Operation.INSERT, max_parallel=max_parallel)
        async def slow(event):
            running[0] += 1
            most[0] = max(most[0], running[0])
            await gate.wait()
            running[0] -= 1

        async with client:
            for title in "abcdef":  # six transactions
                await in_thread(lambda: insert(db, table, [title]))
            await in_thread(lambda: wait_for(lambda: client.stats()["queue_depth"] == 6, what="six events queued"))
            await in_thread(lambda: wait_for(lambda: running[0] == expected, what=f"{expected} running"))
            for _ in range(20):  # the loop's turns to start more, if it would
                await asyncio.sleep(0)
            gate.set()
            await in_thread(lambda: wait_for(lambda: client.stats()["events_delivered"] == 6, what="all done"))
        return most[0]

    assert asyncio.run(main()) == expected


def test_exceptions_from_coroutines_go_to_on_error(make_async_client, make_table, db):
    table = make_table()
    errors: List[Any] = []
    seen: List[str] = []

    async def main() -> None:
        client = make_async_client(on_error=lambda exc, event: errors.append((exc, event.new["title"])))

        @client.on(table, Operation.INSERT)
        async def picky(event):
            await asyncio.sleep(0)
            if event.new["title"] == "bad":
                raise ValueError("no bad titles")
            seen.append(event.new["title"])

        async with client:
            await in_thread(lambda: insert(db, table, ["good", "bad", "fine"]))
            await in_thread(lambda: wait_for(lambda: len(seen) == 2 and errors, what="all three events"))
            assert client.stats()["callbacks_failed"] == 1

    asyncio.run(main())
    assert seen == ["good", "fine"]
    assert [(type(exc), title) for exc, title in errors] == [(ValueError, "bad")]


def test_cancelling_the_iterating_task_ends_the_subscription(make_async_client, make_table, db):
    table = make_table()
    other: List[Any] = []

    async def main() -> None:
        client = make_async_client()

        @client.on(table, Operation.INSERT)
        async def keep(event):
            other.append(event)

        async with client:
            got: List[Any] = []

            async def consume() -> None:
                async for event in client.events(table, Operation.INSERT):
                    got.append(event)

            consumer = asyncio.ensure_future(consume())
            await in_thread(lambda: wait_for(lambda: len(client.listeners) == 2, what="the subscription"))
            await in_thread(lambda: insert(db, table, ["a"]))
            await in_thread(lambda: wait_for(lambda: got, what="the first event"))
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            assert len(client.listeners) == 1  # detached, the other listener stays
            await in_thread(lambda: insert(db, table, ["b"]))
            await in_thread(lambda: wait_for(lambda: len(other) == 2, what="the other listener's events"))
            assert len(got) == 1
            slot = client.driver.config.replication_slot
            await in_thread(lambda: wait_for(lambda: confirmed_flush(db, slot) > other[-1].commit_lsn,
                                             what="acknowledgement to go on"))

    asyncio.run(main())


def test_close_from_a_coroutine_callback_returns_at_once(make_async_client, make_table, db):
    table = make_table()
    calls: List[str] = []

    async def main() -> None:
        client = make_async_client()

        @client.on(table, Operation.INSERT)
        async def stop(event):
            calls.append(event.new["title"])
            await client.close()
            calls.append("closed returned")

        await client.start()
        await in_thread(lambda: insert(db, table, ["a", "b", "c"]))
        await asyncio.wait_for(client.wait(), 20)

    asyncio.run(main())
    assert calls == ["a", "closed returned"]


def test_loop_stays_responsive_while_rows_stream_to_a_callback_that_never_awaits(
        make_async_client, make_table, db, capsys):
    table = make_table("id int PRIMARY KEY")
    rows = 100_000

    async def main() -> float:
        client = make_async_client()
        count = [0]

        @client.on(table, Operation.INSERT)
        async def never_awaits(event):
            count[0] += 1

        largest = [0.0]
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                largest[0] = max(largest[0], now - last)
                last = now

        async with client:
            ticking = asyncio.ensure_future(ticker())
            await in_thread(lambda: db.execute(
                sql.SQL("INSERT INTO {} SELECT generate_series(1, %s)").format(sql.Identifier(table)), (rows,)))
            await in_thread(lambda: wait_for(lambda: count[0] == rows, timeout=120, what=f"{rows} events"))
            stop.set()
            await ticking
        return largest[0]

    largest = asyncio.run(main())
    with capsys.disabled():
        print(f"\nlargest gap of a 10 ms ticker while {rows} rows streamed: {largest * 1000:.1f} ms")
    assert largest < 0.2
