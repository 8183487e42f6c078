"""What goes wrong, and where you hear about it."""

import logging
import os
import queue

import psycopg2

from flash_wal import Client, ConfigurationError, FlashError, Operation

DSN = os.environ.get("FLASH_WAL_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

# flash_wal never configures logging; a callback's failure is logged at ERROR on
# the "flash_wal" logger, with its traceback.
logging.basicConfig(level=logging.CRITICAL)  # keep this example's output short

# A problem with the server or the configuration: start() says what to change.
client = Client(database_cnx=DSN)
client.on("no_such_table", Operation.INSERT)(print)
try:
    client.start()
except ConfigurationError as exc:
    print("start() failed:", exc)
client.close()

# A callback that raises: logged, passed to on_error, and the stream goes on.
db = psycopg2.connect(DSN)
db.autocommit = True
cur = db.cursor()
cur.execute("DROP TABLE IF EXISTS orders")
cur.execute("CREATE TABLE orders (id int PRIMARY KEY)")

failures = queue.Queue()
client = Client(database_cnx=DSN, on_error=lambda exc, event: failures.put((exc, event)))


@client.on("orders", Operation.INSERT)
def on_order(event):
    raise RuntimeError(f"cannot ship order {event.new['id']}")


with client:
    cur.execute("INSERT INTO orders VALUES (7)")
    exc, event = failures.get(timeout=30)
    print("on_error:", exc)
    assert client.wait(timeout=0) is False  # still running
print(isinstance(exc, FlashError), client.stats()["callbacks_failed"])
