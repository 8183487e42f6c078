"""The replication thread: the one owner of the replication connection.

It connects, creates the temporary slot, starts pgoutput and then loops: read a
message without blocking, parse it, decode it, dispatch it; when nothing is waiting,
hand partial batches to the workers, acknowledge what they finished, and sleep in
``select`` on the socket and a self-pipe, so ``stop()`` wakes it at once. All socket
I/O of the replication connection happens here, closing included.
"""

import logging
import os
import select
import threading
import time
from typing import Any, Callable, Dict, Optional

import psycopg2
from psycopg2 import sql

from ...decoding import RelationCache, TypeCasters, fill_unchanged_toast, lookup_types_with
from ...dispatcher import Change, Dispatcher, Transaction
from ...events import MessageEvent
from ...errors import ConfigurationError, FlashError, ReplicationError
from ...operations import Operation
from ...protocol import (
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    PgOutputParser,
    Relation,
    Truncate,
    Type,
    Update,
)

logger = logging.getLogger(__name__)

INSERT, UPDATE, DELETE, TRUNCATE = Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.TRUNCATE


class ChangeTranslator:
    """Turns parsed pgoutput messages into dispatcher calls (replication thread only)."""

    def __init__(self, dispatcher: Dispatcher, relations: RelationCache) -> None:
        self.dispatcher = dispatcher
        self.relations = relations
        self.txn: Optional[Transaction] = None
        self._handlers: Dict[type, Callable[[Any, int], None]] = {
            Begin: self._begin,
            Commit: self._commit,
            Relation: self._relation,
            Insert: self._insert,
            Update: self._update,
            Delete: self._delete,
            Truncate: self._truncate,
            Type: self._ignore,
            Origin: self._ignore,
            Message: self._message,
        }

    def handle(self, message: Any, lsn: int) -> None:
        try:
            handler = self._handlers[message.__class__]
        except KeyError:
            raise ReplicationError(f"unexpected {type(message).__name__} message outside streaming") from None
        handler(message, lsn)

    def _begin(self, message: Begin, lsn: int) -> None:
        self.txn = self.dispatcher.begin(message.final_lsn, message.xid, message.commit_time)

    def _commit(self, message: Commit, lsn: int) -> None:
        self.dispatcher.commit(self.txn, message.end_lsn)
        self.txn = None

    def _relation(self, message: Relation, lsn: int) -> None:
        self.relations.update(message)

    def _ignore(self, message: Any, lsn: int) -> None:
        pass

    def _message(self, message: Message, lsn: int) -> None:
        dispatcher = self.dispatcher
        if not dispatcher.wants_messages:
            return
        if message.transactional:
            # Outside streaming, a transaction is sent once it has committed.
            txn = self.txn
            event = MessageEvent(prefix=message.prefix, content=message.content, transactional=True,
                                 lsn=message.lsn, xid=txn.xid)
            dispatcher.dispatch_message(txn, event)
            return
        # Sent as decoded, outside any transaction: it gets a transaction of its own
        # for the bookkeeping, acknowledged at its own position.
        txn = dispatcher.begin(message.lsn, None, None)
        event = MessageEvent(prefix=message.prefix, content=message.content, transactional=False,
                             lsn=message.lsn, xid=None)
        dispatcher.dispatch_message(txn, event)
        dispatcher.commit(txn, message.lsn)

    def _insert(self, message: Insert, lsn: int) -> None:
        decoder = self.relations.get(message.relid)
        routes = self.dispatcher.routes_for(decoder.table)
        if routes:
            change = Change(INSERT, decoder.table, lsn, new=decoder.decode(message.new))
            self.dispatcher.dispatch(self.txn, change, routes)

    def _update(self, message: Update, lsn: int) -> None:
        decoder = self.relations.get(message.relid)
        routes = self.dispatcher.routes_for(decoder.table)
        if routes:
            old = None
            if message.old is not None:
                old = decoder.decode_key(message.old) if message.old_is_key else decoder.decode(message.old)
            new = decoder.decode(message.new)
            fill_unchanged_toast(new, old)
            self.dispatcher.dispatch(self.txn, Change(UPDATE, decoder.table, lsn, old=old, new=new), routes)

    def _delete(self, message: Delete, lsn: int) -> None:
        decoder = self.relations.get(message.relid)
        routes = self.dispatcher.routes_for(decoder.table)
        if routes:
            old = decoder.decode_key(message.old) if message.old_is_key else decoder.decode(message.old)
            self.dispatcher.dispatch(self.txn, Change(DELETE, decoder.table, lsn, old=old), routes)

    def _truncate(self, message: Truncate, lsn: int) -> None:
        for relid in message.relids:
            decoder = self.relations.get(relid)
            routes = self.dispatcher.routes_for(decoder.table)
            if routes:
                change = Change(
                    TRUNCATE, decoder.table, lsn,
                    cascade=message.cascade, restart_identity=message.restart_identity,
                )
                self.dispatcher.dispatch(self.txn, change, routes)


class ReplicationThread(threading.Thread):
    """Runs the replication session; see the module docstring."""

    def __init__(
        self,
        *,
        connect: Callable[..., Any],
        slot: str,
        plugin_options: Dict[str, str],
        protocol_version: int,
        dispatcher: Dispatcher,
        status_interval: float,
        shutdown_timeout: float,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        super().__init__(name=f"flash_wal-replication-{slot}", daemon=True)
        self._connect = connect
        self._slot = slot
        self._plugin_options = plugin_options
        self._protocol_version = protocol_version
        self._dispatcher = dispatcher
        self._status_interval = status_interval
        self._shutdown_timeout = shutdown_timeout
        self._on_fatal = on_fatal
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Guards the pipe's closing: a descriptor number written to after close
        # could by then belong to another file.
        self._pipe_lock = threading.Lock()
        self._pipe_open = True
        self._stopping = False
        self._idle = False  # in select(): an advanced acknowledgement should wake it
        self._streaming = threading.Event()
        self._streaming_error: Optional[BaseException] = None
        self._sent_lsn = 0
        self._conn: Any = None
        self._conn_lock = threading.Lock()  # _conn is read by start_streaming() to cancel
        self.drained = True

    # --- called from other threads ----------------------------------------------------

    def start_streaming(self, timeout: float) -> None:
        """Start the thread; return once changes are streaming, or raise why not."""
        self.start()
        if not self._streaming.wait(timeout):
            # Creating the slot waits for every open transaction to end. Cancelling
            # is the one call psycopg2 allows on a connection from another thread.
            self.stop()
            with self._conn_lock:
                if self._conn is not None:
                    self._conn.cancel()
            self._streaming.wait()
            raise ConfigurationError(
                f"the replication slot could not be created within setup_timeout={timeout:g} s: "
                "the server waits for transactions that were open at that moment to end. Finish "
                "or cancel long-running transactions (see pg_stat_activity), or raise "
                "DriverConfig(setup_timeout=...)"
            )
        if self._streaming_error is not None:
            raise self._streaming_error

    def stop(self) -> None:
        """Ask the thread to stop reading, drain callbacks, acknowledge and disconnect."""
        self._stopping = True
        self._dispatcher.tracker.wake()
        self._wake()

    def _wake_if_idle(self) -> None:
        # Workers call this when they finish a transaction: while the thread reads
        # it acknowledges anyway, so only a sleeping thread needs the byte.
        if self._idle:
            self._wake()

    def _wake(self) -> None:
        with self._pipe_lock:
            if self._pipe_open:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:
                    pass  # the pipe is full: the thread has been woken already

    # --- the thread -------------------------------------------------------------------

    def run(self) -> None:
        conn = catalog = None
        try:
            try:
                conn = self._connect(replication=True)
                with self._conn_lock:
                    self._conn = conn
                cursor = conn.cursor()
                cursor.execute(
                    sql.SQL("CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT").format(
                        sql.Identifier(self._slot)
                    )
                )
                cursor.start_replication(
                    slot_name=self._slot, decode=False, options=self._plugin_options,
                    status_interval=self._status_interval,
                )
            except BaseException as exc:
                self._streaming_error = _as_flash_error(exc, "could not start replication")
                return
            finally:
                self._streaming.set()

            def catalog_cursor() -> Any:
                nonlocal catalog
                if catalog is None:
                    catalog = self._connect(replication=False)
                return catalog.cursor()

            casters = TypeCasters(conn.cursor(), lookup=_lazy_lookup(catalog_cursor))
            translator = ChangeTranslator(self._dispatcher, RelationCache(casters))
            try:
                self._stream(cursor, translator)
                self._finish(cursor)
            except BaseException as exc:
                if not self._stopping:
                    self._on_fatal(_as_flash_error(exc, "replication stopped"))
        finally:
            with self._conn_lock:
                self._conn = None
            for connection in (conn, catalog):
                if connection is not None:
                    try:
                        connection.close()
                    except psycopg2.Error:
                        pass
            with self._pipe_lock:
                self._pipe_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _stream(self, cursor: Any, translator: ChangeTranslator) -> None:
        parser = PgOutputParser(self._protocol_version)
        parse, handle = parser.parse, translator.handle
        read = cursor.read_message
        dispatcher = self._dispatcher
        waitables = [cursor.connection.fileno(), self._wake_r]
        dispatcher.tracker.on_advance = self._wake_if_idle
        while not self._stopping:
            if not dispatcher.has_room():
                self._wait_for_room(cursor)
                continue
            message = read()
            if message is not None:
                handle(parse(message.payload), message.data_start)
                continue
            dispatcher.flush()
            self._idle = True
            self._acknowledge(cursor, force=True)
            readable, _, _ = select.select(waitables, [], [], self._status_interval)
            self._idle = False
            if self._wake_r in readable:
                _drain_pipe(self._wake_r)

    def _wait_for_room(self, cursor: Any) -> None:
        """The workers are behind: read nothing new, but keep the server answered."""
        deadline = time.monotonic() + self._status_interval
        while not self._stopping and not self._dispatcher.has_room():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._acknowledge(cursor, force=True, keepalive=True)
                deadline = time.monotonic() + self._status_interval
                continue
            self._dispatcher.tracker.wait_for_room(self._dispatcher.max_queued_events, remaining)
        self._acknowledge(cursor, force=True)

    def _acknowledge(self, cursor: Any, *, force: bool, keepalive: bool = False) -> None:
        acked = self._dispatcher.tracker.acked_lsn
        if acked > self._sent_lsn or keepalive:
            cursor.send_feedback(write_lsn=acked, flush_lsn=acked, apply_lsn=acked, force=force)
            self._sent_lsn = acked

    def _finish(self, cursor: Any) -> None:
        """Give in-flight callbacks up to shutdown_timeout, then acknowledge what finished."""
        deadline = time.monotonic() + self._shutdown_timeout
        self._dispatcher.flush()
        while True:
            remaining = deadline - time.monotonic()
            if self._dispatcher.drain(min(max(remaining, 0), self._status_interval)):
                break
            if remaining <= 0:
                self.drained = False
                logger.warning(
                    "%d events were still being handled after shutdown_timeout=%.1f s; "
                    "their transactions are not acknowledged",
                    self._dispatcher.tracker.queued_events, self._shutdown_timeout,
                )
                break
            self._acknowledge(cursor, force=True, keepalive=True)
        self._acknowledge(cursor, force=True)


def _lazy_lookup(catalog_cursor: Callable[[], Any]):
    def lookup(oids):
        return lookup_types_with(catalog_cursor())(oids)

    return lookup


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _as_flash_error(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, FlashError) or not isinstance(exc, Exception):
        return exc
    error = ReplicationError(f"{what}: {exc}".strip())
    error.__cause__ = exc
    return error
