"""asyncio: coroutine callbacks, and events() as an async iterator."""

import asyncio
import os

import psycopg2

from flash_wal import Operation
from flash_wal.aio import AsyncClient

DSN = os.environ.get("FLASH_WAL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

db = psycopg2.connect(DSN)
db.autocommit = True
cur = db.cursor()
cur.execute("DROP TABLE IF EXISTS orders")
cur.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric, status text)")


async def write() -> None:
    """The application's own writes, off the loop (psycopg2 blocks)."""
    def statements() -> None:
        cur.execute("INSERT INTO orders VALUES (1, 10.50, 'new'), (2, 99.00, 'new')")
        cur.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
        cur.execute("DELETE FROM orders WHERE id = 2")
    await asyncio.get_running_loop().run_in_executor(None, statements)


async def main() -> None:
    client = AsyncClient(database_cnx=DSN)   # one per process
    paid = asyncio.Event()
    seen = []

    @client.on("orders", Operation.UPDATE)
    async def on_update(event):          # runs on this loop; the transaction is acknowledged
        await asyncio.sleep(0)           # once this coroutine has returned
        seen.append(f"callback: order {event.new['id']} {event.old['status']} -> {event.new['status']}")
        paid.set()

    async with client:                   # await client.start() ... await client.close()
        changes = client.events("orders", Operation.ALL)   # subscribed from here on
        await write()
        async for event in changes:      # in commit order; break ends the subscription
            print("events():", event.operation, event.key)
            if event.operation is Operation.DELETE:
                break
        await paid.wait()
    print(*seen, sep="\n")


asyncio.run(main())
