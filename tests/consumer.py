"""A client process for tests that need to kill one: prints each event's id, flushed.

Usage: python -m tests.consumer DSN TABLE SLOT PREFIX
"""

import sys

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig


def main() -> None:
    dsn, table, slot, prefix = sys.argv[1:5]
    client = Client(database_cnx=dsn, driver=Driver(DriverConfig(replication_slot=slot, publication_slot_prefix=prefix)))

    @client.on(table, Operation.INSERT)
    def show(event):
        print(f"event {event.new['id']}", flush=True)

    client.start()
    print("streaming", flush=True)
    client.wait()


if __name__ == "__main__":
    main()
