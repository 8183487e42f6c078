"""A large value an UPDATE left alone, without REPLICA IDENTITY FULL."""

import os
import queue

import psycopg2

from flash_wal import UNCHANGED_TOAST, Client, Operation
from flash_wal.drivers.wal_logical import Driver

DSN = os.environ.get("FLASH_WAL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

db = psycopg2.connect(DSN)
db.autocommit = True
cur = db.cursor()
cur.execute("DROP TABLE IF EXISTS pages")
cur.execute("CREATE TABLE pages (id int PRIMARY KEY, views int, body text)")
# Stored out of line (TOASTed): large, and not compressible enough to fit in the row.
cur.execute("INSERT INTO pages SELECT 1, 0, string_agg(md5(i::text), '') FROM generate_series(1, 1000) i")

received = queue.Queue()
client = Client(database_cnx=DSN, driver=Driver(replica_identity_full=False))
client.on("pages", Operation.UPDATE)(received.put)

with client:
    cur.execute("UPDATE pages SET views = views + 1 WHERE id = 1")
    event = received.get(timeout=30)

print(event.new["views"], event.new["body"] is UNCHANGED_TOAST, event.old)
