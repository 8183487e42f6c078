"""A client process for tests that kill one with SIGKILL.

    python -m tests.consumer DSN TABLE SLOT PREFIX [--durable] [--ids-file PATH]
                             [--die-at STEP]

It prints ``streaming`` once started and ``event <id>`` for each insert; with
``--ids-file`` it appends each id to that file and fsyncs before the callback
returns, so an id on disk was handled before it could be acknowledged. SIGTERM
closes the client (``closing``, then ``closed``). ``--die-at`` makes the process
SIGKILL itself at one step of start() or close(), to test what that leaves behind.
"""

import argparse
import faulthandler
import os
import signal

import psycopg2.extras

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig, identity, server
from flash_wal.drivers.wal_logical.stream import ReplicationThread


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _die_before(owner, name):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        _die()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _die_after(owner, name):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        _die()
        return result

    setattr(owner, name, wrapper)


#: Where --die-at strikes, in the order start() and close() reach them.
STEPS = {
    "checked": lambda: _die_after(server, "check_server"),
    "published": lambda: (_die_after(server, "create_publication"), _die_after(server, "alter_publication")),
    "identity-set": lambda: _die_after(identity, "set_replica_identity_full"),
    "slot-ready": lambda: _die_before(psycopg2.extras.ReplicationCursor, "start_replication"),
    "replicating": lambda: _die_after(psycopg2.extras.ReplicationCursor, "start_replication"),
    "draining": lambda: _die_before(ReplicationThread, "_finish"),
    "dropping": lambda: _die_before(server, "drop_publication"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("dsn", "table", "slot", "prefix"):
        parser.add_argument(name)
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--ids-file")
    parser.add_argument("--die-at", choices=sorted(STEPS))
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)
    if args.die_at:
        STEPS[args.die_at]()
    ids = os.open(args.ids_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if args.ids_file else None

    client = Client(database_cnx=args.dsn, driver=Driver(DriverConfig(
        replication_slot=args.slot, publication_slot_prefix=args.prefix, durable=args.durable,
        reconnect_delay=0.05,
    )))

    @client.on(args.table, Operation.INSERT)
    def handle(event):
        if ids is not None:
            os.write(ids, b"%d\n" % event.new["id"])
            os.fsync(ids)
        else:
            print(f"event {event.new['id']}", flush=True)

    # Blocked before any thread starts, so no thread but this one ever takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    client.start()
    print("streaming", flush=True)
    signal.sigwait({signal.SIGTERM})
    print("closing", flush=True)
    client.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
