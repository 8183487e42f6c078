"""Values arrive as the Python objects a SELECT through psycopg2 gives."""

import os
import queue

import psycopg2

from flash_wal import Client, Operation

DSN = os.environ.get("FLASH_WAL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

db = psycopg2.connect(DSN)
db.autocommit = True
cur = db.cursor()
cur.execute("DROP TABLE IF EXISTS samples")
cur.execute("DROP TYPE IF EXISTS mood")
cur.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")
cur.execute(
    "CREATE TABLE samples (id bigint PRIMARY KEY, price numeric(6, 2), ratio double precision,"
    " done boolean, name text, day date, at timestamptz, wait interval, doc jsonb,"
    " token uuid, raw bytea, tags text[], feeling mood, missing int)"
)

received = queue.Queue()
client = Client(database_cnx=DSN)
client.on("samples", Operation.INSERT)(received.put)

with client:
    cur.execute(
        "INSERT INTO samples VALUES (1, 9.9, 0.5, true, 'café', '2026-11-21',"
        " '2026-11-21 12:00:00+01', '1 day 2 hours', '{\"a\": [1, 2]}',"
        " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff', '{x,y}', 'happy', NULL)"
    )
    event = received.get(timeout=30)

for column, value in event.new.items():
    print(f"{column:8} {type(value).__name__:10} {value!r}")
print(event.table, event.commit_time.tzinfo)
