"""Listeners: a table, some of its columns, some of its rows."""

import os
import queue

import psycopg2

from flash_wal import Client, Condition, Listener, Operation

DSN = os.environ.get("FLASH_WAL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

db = psycopg2.connect(DSN)
db.autocommit = True
cur = db.cursor()
cur.execute("DROP TABLE IF EXISTS articles")
cur.execute("CREATE TABLE articles (id int PRIMARY KEY, title text, status text)")

received = queue.Queue()

# Published articles only, and two of their columns.
published = Listener(table="articles", fields=["id", "title"],
                     conditions=[Condition("status", "published")])


@published.on(Operation.INSERT | Operation.UPDATE | Operation.DELETE)
def on_published(event):
    received.put(event)


client = Client(database_cnx=DSN)
client.attach(published)

with client:
    cur.execute("INSERT INTO articles VALUES (1, 'Draft', 'draft')")      # no match: nothing
    cur.execute("UPDATE articles SET status = 'published' WHERE id = 1")  # starts to match
    cur.execute("UPDATE articles SET title = 'Final' WHERE id = 1")       # still matches
    cur.execute("UPDATE articles SET status = 'archived' WHERE id = 1")   # stops matching
    for _ in range(3):
        event = received.get(timeout=30)
        print(type(event).__name__, getattr(event, "old", None), getattr(event, "new", None))
