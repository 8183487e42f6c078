"""Logical decoding messages: pg_logical_emit_message() to on_message callbacks."""

import os
import queue

import psycopg2

from flash_wal import Client

DSN = os.environ.get("FLASH_WAL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

db = psycopg2.connect(DSN)
db.autocommit = True
cur = db.cursor()

received = queue.Queue()
client = Client(database_cnx=DSN)


@client.on_message("audit")  # every message whose prefix starts with "audit"
def on_audit(message):
    received.put(message)


with client:
    cur.execute("SELECT pg_logical_emit_message(true, 'audit.login', 'alice')")
    cur.execute("SELECT pg_logical_emit_message(false, 'audit.logout', 'bob')")
    cur.execute("SELECT pg_logical_emit_message(true, 'metrics', 'ignored')")
    for _ in range(2):
        message = received.get(timeout=30)
        print(message.prefix, message.content, message.transactional)
