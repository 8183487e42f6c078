"""The reading side of a backfill: one thread and one normal connection per backfill,
reading the table in key order, one short transaction per chunk.

Each chunk's transaction (REPEATABLE READ, so one snapshot serves all of it) reads
``pg_current_snapshot()``, then the chunk (keyset pagination: ``WHERE (key) > (last)
ORDER BY key LIMIT n``: an index range scan, no table lock, nothing held between
chunks), hands the rows to the dispatcher's :class:`~flash_wal.backfill.Merge`, and
emits a transactional logical decoding message, its watermark, before committing: the
stream reaches the watermark at that commit, after everything the snapshot saw. A
transactional message gets an xid, so the commit flushes the WAL at once, rather than
waiting for the WAL writer as a non-transactional one does (about 200 ms a chunk).
The next chunk is read once the stream has merged this one, so at most one chunk's
rows are held.
"""

import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ...backfill import WATERMARK_PREFIX, Backfill, Chunk, Merge, Snapshot, chunk_message, key_text
from ...dispatcher.routes import key_reader
from ...decoding import RowDecoder, TypeCasters, lookup_types_with
from ...errors import ConfigurationError, FlashError, one_line
from ...listener import Listener
from ...pgoutput.messages import Column, Relation
from .. import base
from . import backfill_progress, catalog, keys
from .backfill_progress import Progress

__all__ = ["BackfillReader"]

logger = logging.getLogger(__name__)

_POLL = 0.05  # seconds between looks at the acknowledged position while waiting for it


class BackfillReader:
    """Reads one listener's table into its :class:`~flash_wal.Backfill`. Made (and its
    set-up checked, raising ConfigurationError) in the caller's thread; :meth:`start`
    hands the connection to the reader's own thread."""

    def __init__(
        self, conn: Any, listener: Listener, backfill: Backfill, sink: base.Sink, *,
        server_version: int, durable_slot: Optional[str], progress_name: str,
    ) -> None:
        self._conn = conn
        self.listener = listener
        self.backfill = backfill
        self._sink = sink
        self._server_version = server_version
        self._slot = durable_slot
        self._progress_name = progress_name
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"flash_wal-backfill-{listener.table}", daemon=True)
        self._in_flight: Deque[Chunk] = deque()  # merged, not acknowledged yet
        self._acked_key: Optional[Tuple[Optional[str], ...]] = None
        self._set_up()
        backfill.on_cancel(self.stop)

    # --- set-up (the caller's thread) -----------------------------------------------

    def _set_up(self) -> None:
        cursor = self._conn.cursor()
        table = self.listener.table
        info = catalog.describe_tables(cursor, [table])[table]
        table_keys = keys.describe_keys(cursor, [info])[table]
        key = tuple(self.listener.config.primary_key) or table_keys.default_key
        if not key:
            raise ConfigurationError(
                f"cannot backfill {table}: it has no key to read it in order by (no primary key, no replica "
                f"identity index); add a primary key, or give the listener primary_key=(...) naming unique, "
                "NOT NULL columns"
            )
        cursor.execute(
            "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, a.attnotnull FROM pg_catalog.pg_attribute a"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (info.oid,),
        )
        attributes = cursor.fetchall()
        nullable = [name for name, _oid, _mod, not_null in attributes if name in key and not not_null]
        if nullable:
            raise ConfigurationError(
                f"cannot backfill {table} by key {', '.join(key)}: column {', '.join(nullable)} may be NULL, "
                "and rows are read in key order; make it NOT NULL or choose another primary_key"
            )
        self.key = key
        names = [name for name, *_ in attributes]
        columns = tuple(Column(name, oid, mod, name in key) for name, oid, mod, _ in attributes)
        self._decoder = RowDecoder(
            Relation(None, info.oid, table.schema, table.name, info.replica_identity, columns),
            TypeCasters(cursor, lookup_types_with(cursor)), key,
        )
        self._key_positions = [names.index(column) for column in key]
        key_of = key_reader(key)
        assert key_of is not None
        self.merge = Merge(uuid.uuid4().hex, key_of)
        cursor.execute("SELECT c.reltuples::int8 FROM pg_catalog.pg_class c WHERE c.oid = %s", (info.oid,))
        estimate = cursor.fetchone()[0]
        self.backfill.total = None if estimate is None or estimate < 0 else int(estimate)
        selected = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(name)) for name in names)
        # Qualified: a bare name in ORDER BY would mean the column's text in the select list.
        ordered = sql.SQL(", ").join(sql.Identifier("r", column) for column in key)
        source = sql.SQL("{} AS r").format(catalog.table_identifier(table))
        self._first_query = sql.SQL("SELECT {} FROM {} ORDER BY {} LIMIT %s").format(selected, source, ordered)
        self._next_query = sql.SQL("SELECT {} FROM {} WHERE ({}) > ({}) ORDER BY {} LIMIT %s").format(
            selected, source, ordered, sql.SQL(", ").join(sql.Placeholder() * len(key)), ordered)
        self._snapshot_query = (
            "SELECT pg_catalog.pg_current_snapshot()::text" if self._server_version >= 130000
            else "SELECT pg_catalog.txid_current_snapshot()::text"
        )
        self._after: Optional[Tuple[Optional[str], ...]] = None
        if self._slot is not None:
            backfill_progress.ensure_table(cursor)
            saved = backfill_progress.load(cursor, self._slot, self._progress_name)
            if saved is not None:
                self._after = self._acked_key = saved.after_key
                self.backfill.add_rows(saved.rows)
                if saved.completed:
                    self.backfill.complete()

    # --- the reader's thread --------------------------------------------------------

    def start(self) -> None:
        if self.backfill.done:  # completed by an earlier run: not repeated
            logger.info("backfill of %s completed earlier (%d rows): not repeated", self.listener.table,
                        self.backfill.rows)
            self._conn.close()
            return
        self._sink.start_merge(self.listener, self.merge)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self.merge.stop()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backfill = self.backfill
        logger.info("backfill of %s started: about %s rows, in chunks of %d, by key %s", self.listener.table,
                    "?" if backfill.total is None else backfill.total, backfill.chunk_size, ", ".join(self.key))
        try:
            self._read_all()
        except Exception as exc:
            if not self._stopping:
                logger.error("backfill of %s failed: %s", self.listener.table, one_line(exc))
                backfill.fail(FlashError(f"backfill of {self.listener.table} failed: {one_line(exc)}"))
        finally:
            self._sink.end_merge(self.merge)
            self._save_on_exit()
            self._conn.close()
        if backfill.done:
            logger.info("backfill of %s completed: %d rows in %.1f s", self.listener.table, backfill.rows,
                        backfill.seconds)

    def _read_all(self) -> None:
        size, number = self.backfill.chunk_size, 0
        while not self._stopping:
            while not self._sink.has_room() and not self._stopping:
                self._settle()
                self._sink.wait_for_room(_POLL)
            number += 1
            chunk = self._read_chunk(number, size)
            if chunk is None:  # nothing left to read
                break
            while not self.merge.wait_merged(chunk, _POLL * 10):
                self._settle()
            if self._stopping or self.merge.stopped:
                return
            self._in_flight.append(chunk)
            self._after = chunk.last_key
            self._settle()
            if chunk.last:
                break
        while self._in_flight and not self._stopping:
            self._settle()
            time.sleep(_POLL)
        if not self._stopping and self.backfill.complete():
            self._save(completed=True)

    def _read_chunk(self, number: int, size: int) -> Optional[Chunk]:
        cursor = self._conn.cursor()
        rows_cursor = self._conn.cursor()
        psycopg2.extensions.register_type(psycopg2.extensions.BYTES, rows_cursor)  # text as sent, like pgoutput
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            cursor.execute(self._snapshot_query)
            snapshot = Snapshot.parse(cursor.fetchone()[0])
            if self._after is None:
                rows_cursor.execute(self._first_query, (size,))
            else:
                rows_cursor.execute(self._next_query, (*self._after, size))
            raw: List[Sequence[Any]] = rows_cursor.fetchall()
            if not raw:
                cursor.execute("COMMIT")
                return None
            decode = self._decoder.decode
            rows = [decode(values) for values in raw]
            last = raw[-1]
            chunk = Chunk(number, rows, key_text([last[i] for i in self._key_positions]), snapshot)
            chunk.last = len(raw) < size
            if self._slot is not None:
                self._save(cursor)
            self.merge.expect(chunk)
            cursor.execute("SELECT pg_catalog.pg_logical_emit_message(true, %s, %s)",
                           (WATERMARK_PREFIX, chunk_message(self.merge.token, number)))
            cursor.execute("COMMIT")
        except BaseException:
            self.merge.forget()
            if not self._conn.closed:
                self._conn.rollback()
            raise
        return chunk

    def _settle(self) -> None:
        """Count the rows of chunks now acknowledged."""
        in_flight = self._in_flight
        while in_flight and self._sink.acknowledged(in_flight[0].txn):
            chunk = in_flight.popleft()
            self.backfill.add_rows(chunk.delivered)
            self._acked_key = chunk.last_key

    def _save(self, cursor: Any = None, completed: bool = False) -> None:
        if self._slot is None:
            return
        progress = Progress(self._acked_key, self.backfill.rows, completed)
        backfill_progress.save(cursor or self._conn.cursor(), self._slot, self._progress_name, progress)

    def _save_on_exit(self) -> None:
        if self._slot is None or self.backfill.done or self._conn.closed:
            return
        try:
            self._settle()
            self._save()
        except psycopg2.Error as exc:
            logger.debug("backfill progress of %s not saved at exit: %s", self.listener.table, one_line(exc))


def start_reader(
    connect: Callable[[], Any], listener: Listener, backfill: Backfill, sink: base.Sink, *,
    server_version: int, durable_slot: Optional[str], ordinal: int,
) -> BackfillReader:
    """Check that ``listener``'s table can be backfilled (ConfigurationError if not) and
    start reading it."""
    if server_version < 140000:
        raise ConfigurationError("backfill needs PostgreSQL 14 or later (pgoutput's messages option)")
    try:
        conn = connect()
    except psycopg2.OperationalError as exc:
        raise ConfigurationError(f"cannot connect to backfill {listener.table}: {one_line(exc)}") from exc
    try:
        reader = BackfillReader(conn, listener, backfill, sink, server_version=server_version,
                                durable_slot=durable_slot, progress_name=progress_name(listener, ordinal))
    except BaseException:
        conn.close()
        raise
    reader.start()
    return reader


def progress_name(listener: Listener, ordinal: int) -> str:
    """What names a listener's progress: its table and its place among the backfilling
    listeners of that table (a durable client attaches them in the same order)."""
    return f"{listener.table}#{ordinal}"

