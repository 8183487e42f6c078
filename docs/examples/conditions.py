"""Conditions: operators, NULL, values typed by the server, rows entering and leaving."""

import os
import queue

import psycopg2

from flash_wal import Client, Condition, Listener, Operation

DSN = os.environ.get("FLASH_WAL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

db = psycopg2.connect(DSN)
db.autocommit = True
cur = db.cursor()
cur.execute("DROP TABLE IF EXISTS orders")
cur.execute("CREATE TABLE orders (id int PRIMARY KEY, tenant_id int, total numeric(10, 2),"
            " status text, shipped_at timestamptz)")

big = Listener(table="orders", conditions=[Condition("tenant_id", 7), Condition("total", 100, op="gt")])
unshipped = Listener(table="orders", conditions=[Condition("status", ["new", "paid"], op="in"),
                                                 Condition("shipped_at", None)])
shipped_2026 = Listener(table="orders", conditions=[Condition("shipped_at", "2026-01-01", op="gte")])

received = queue.Queue()
listeners = {"big": big, "unshipped": unshipped, "shipped_2026": shipped_2026}
for name, listener in listeners.items():
    listener.on(Operation.ALL, lambda event, name=name: received.put((name, event)))

client = Client(database_cnx=DSN)
client.attach(*listeners.values())
with client:
    print(shipped_2026.conditions[0])  # the str, read by the server as a timestamptz
    cur.execute("INSERT INTO orders VALUES (1, 7, 250, 'new', NULL), (2, 7, 80, 'paid', NULL),"
                " (3, 8, 500, 'new', NULL)")
    cur.execute("UPDATE orders SET status = 'shipped', shipped_at = '2026-03-01 10:00+00' WHERE id = 1")
    cur.execute("UPDATE orders SET total = 120 WHERE id = 2")
    events = [received.get(timeout=30) for _ in range(9)]

for name in listeners:  # each listener's events in commit order
    for _, event in (item for item in events if item[0] == name):
        row = event.old if event.operation is Operation.DELETE else event.new
        print(f"{name:13} {type(event).__name__:12} id={row['id']} total={row['total']} status={row['status']}")
