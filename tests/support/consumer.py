"""A client process for tests that kill one with SIGKILL.

    python -m tests.support.consumer DSN TABLE SLOT PREFIX [--durable] [--ids-file PATH]
                             [--die-at STEP] [--streaming] [--status-interval S]
                             [--record PATH] [--column NAME] [--all-operations]
                             [--block-at VALUE] [--no-fsync] [--backfill CHUNK]

It prints ``streaming`` once started and ``event <id>`` for each insert; with
``--ids-file`` it appends each id to that file and fsyncs before the callback
returns, so an id on disk was handled before it could be acknowledged. SIGTERM
closes the client (``closing``, then ``closed``). ``--die-at`` makes the process
SIGKILL itself at one step of start() or close(), to test what that leaves behind.

``--record`` appends ``<pid> <op> <value> <commit_lsn>`` per event instead (op is
I, U or D; value is the ``--column`` of the new row, of the old one for a delete),
so that the parent can tell lost rows, duplicates, and which incarnation received
what. ``--no-fsync`` leaves out the fsync, for long runs: a SIGKILL does not lose
what was written, only a crash of the machine would. ``--all-operations`` listens to
updates and deletes too. ``--block-at VALUE`` makes the callback of the first event
whose value is VALUE print ``blocked <value> <commit_lsn>`` and never return, so the
parent can look at the server while it blocks, then SIGKILL the process.
``--backfill CHUNK`` backfills the table once streaming (op R in the record) and prints
``backfilled <rows>`` when the backfill completes.
``--streaming`` turns on use_streaming with a 64 kB logical_decoding_work_mem for the
walsender (the setting that decides when the server streams is the decoding
session's own), so that any transaction of a few hundred rows is streamed.
"""

import argparse
import faulthandler
import os
import signal
import threading
from typing import List, Tuple

import psycopg2.extensions
import psycopg2.extras

from flash_wal import Client, Listener, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig, catalog, identity
from flash_wal.drivers.wal_logical.replication import ReplicationThread


class RecordFile:
    """Reads what ``--record`` wrote, incrementally: each call reads only the new lines."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: List[Tuple[int, str, int, int]] = []  # (pid, op, value, commit_lsn)
        self._offset = 0

    def read(self) -> List[Tuple[int, str, int, int]]:
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            whole = data[:data.rfind(b"\n") + 1]  # a line being written is read next time
            self._offset += len(whole)
            for line in whole.split(b"\n")[:-1]:
                pid, op, value, commit_lsn = line.split()
                self.entries.append((int(pid), op.decode(), int(value), int(commit_lsn)))
        return self.entries

    def values(self) -> List[int]:
        return [value for _, _, value, _ in self.read()]


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
    "checked": lambda: _die_after(catalog, "check_server"),
    "published": lambda: (_die_after(catalog, "create_publication"), _die_after(catalog, "alter_publication")),
    "identity-set": lambda: _die_after(identity, "set_replica_identity_full"),
    "slot-ready": lambda: _die_before(psycopg2.extras.ReplicationCursor, "start_replication"),
    "replicating": lambda: _die_after(psycopg2.extras.ReplicationCursor, "start_replication"),
    "draining": lambda: _die_before(ReplicationThread, "_finish"),
    "dropping": lambda: _die_before(catalog, "drop_publication"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("dsn", "table", "slot", "prefix"):
        parser.add_argument(name)
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--ids-file")
    parser.add_argument("--die-at", choices=sorted(STEPS))
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--status-interval", type=float, default=10.0)
    parser.add_argument("--record")
    parser.add_argument("--column", default="id")
    parser.add_argument("--all-operations", action="store_true")
    parser.add_argument("--block-at", type=int)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--backfill", type=int)
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)
    if args.die_at:
        STEPS[args.die_at]()
    ids = os.open(args.ids_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if args.ids_file else None

    record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if args.record else None
    dsn = args.dsn
    if args.streaming:
        dsn = psycopg2.extensions.make_dsn(dsn, options="-c logical_decoding_work_mem=64kB")

    client = Client(database_cnx=dsn, driver=Driver(DriverConfig(
        replication_slot=args.slot, publication_slot_prefix=args.prefix, durable=args.durable,
        reconnect_delay=0.05, use_streaming=args.streaming, status_interval=args.status_interval,
    )))
    operations = Operation.INSERT | Operation.UPDATE | Operation.DELETE if args.all_operations else Operation.INSERT
    pid = os.getpid()
    blocked = threading.Event()

    if args.backfill:
        operations |= Operation.READ
    listener = Listener(table=args.table)

    @listener.on(operations)
    def handle(event):
        value = (event.old if event.operation is Operation.DELETE else event.new)[args.column]
        if args.block_at is not None and value == args.block_at and not blocked.is_set():
            blocked.set()
            print(f"blocked {value} {event.commit_lsn}", flush=True)
            threading.Event().wait()  # until SIGKILL
        if record is not None:
            os.write(record, b"%d %s %d %d\n" % (pid, str(event.operation)[0].encode(), value, event.commit_lsn))
            if not args.no_fsync:
                os.fsync(record)
        elif ids is not None:
            os.write(ids, b"%d\n" % event.new["id"])
            os.fsync(ids)
        else:
            print(f"event {event.new['id']}", flush=True)

    # Blocked before any thread starts, so no thread but this one ever takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    client.attach(listener)
    client.start()
    print("streaming", flush=True)
    if args.backfill:
        backfill = client.backfill(listener, chunk_size=args.backfill)
        threading.Thread(target=lambda: backfill.wait() and print(f"backfilled {backfill.rows}", flush=True),
                         daemon=True).start()
    signal.sigwait({signal.SIGTERM})
    print("closing", flush=True)
    client.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
