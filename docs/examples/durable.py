"""A durable slot: what is committed while no client runs arrives on the next start."""

import os
import queue

import psycopg2

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

DSN = os.environ.get("FLASH_WAL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
CONFIG = DriverConfig(durable=True, replication_slot="invoices_sync")

db = psycopg2.connect(DSN)
db.autocommit = True
cur = db.cursor()
cur.execute("DROP TABLE IF EXISTS invoices")
cur.execute("CREATE TABLE invoices (id int PRIMARY KEY, total numeric)")


def run_once(expected):
    received = queue.Queue()
    client = Client(database_cnx=DSN, driver=Driver(CONFIG))
    client.on("invoices", Operation.INSERT)(received.put)
    with client:
        if not expected:
            return  # the first run only creates the slot
        for _ in range(expected):
            event = received.get(timeout=30)
            # At-least-once: after a crash an event can come again; an upsert keyed
            # on the row id makes handling it twice harmless.
            print("synced invoice", event.new["id"], event.new["total"])


run_once(0)
cur.execute("INSERT INTO invoices VALUES (1, 12.50), (2, 99.00)")  # no client running
run_once(2)
Driver(CONFIG).drop(DSN)  # done with it: a durable slot keeps WAL until dropped
