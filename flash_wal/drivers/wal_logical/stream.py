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
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import psycopg2
import psycopg2.errorcodes
from psycopg2 import sql

from ...decoding import RelationCache, TypeCasters, fill_unchanged_toast, lookup_types_with
from ...dispatcher import Dispatcher, Transaction
from ...events import MessageEvent, format_lsn
from ...errors import ConfigurationError, FlashError, ReplicationError, SlotInvalidatedError
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
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
)
from .held import HeldTransaction
from .server import invalidated_slot_error

logger = logging.getLogger(__name__)

INSERT, UPDATE, DELETE = Operation.INSERT, Operation.UPDATE, Operation.DELETE


class ChangeTranslator:
    """Turns parsed pgoutput messages into dispatcher calls (replication thread only).

    Streamed transactions (``use_streaming``) are held, frame by frame, until their
    Stream Commit; then :meth:`handle` returns an iterator that replays them, one
    frame per step, so the caller keeps control between frames (back-pressure,
    stopping) however large the transaction.
    """

    def __init__(
        self, dispatcher: Dispatcher, relations: RelationCache, parser: PgOutputParser,
        stream_buffer_bytes: int,
    ) -> None:
        self.dispatcher = dispatcher
        self.relations = relations
        self.parser = parser
        self.txn: Optional[Transaction] = None
        self._stream_buffer_bytes = stream_buffer_bytes
        self._held: Dict[int, HeldTransaction] = {}  # top-level xid -> its frames
        self._streaming: Optional[HeldTransaction] = None  # the block being received
        self._replay: Optional[Iterator[None]] = None
        self._handlers: Dict[type, Callable[[Any, int], Any]] = {
            StreamStart: self._stream_start,
            StreamStop: self._stream_stop,
            StreamCommit: self._stream_commit,
            StreamAbort: self._stream_abort,
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

    def handle(self, message: Any, lsn: int, payload: bytes) -> Optional[Iterator[None]]:
        """Act on one message; for a Stream Commit, return the replay to run."""
        held = self._streaming
        if held is not None and message.__class__ is not StreamStop:
            if message.__class__ is Relation:
                self.relations.update(message)  # later blocks and transactions rely on it
            if message.__class__ is not Origin:
                held.append(message.xid, lsn, payload)
            return None
        try:
            handler = self._handlers[message.__class__]
        except KeyError:
            raise ReplicationError(f"unexpected {type(message).__name__} message") from None
        return handler(message, lsn)

    def close(self) -> None:
        """Drop every held transaction, removing its temporary file."""
        if self._replay is not None:
            self._replay.close()
            self._replay = None
        for held in self._held.values():
            held.close()
        self._held.clear()
        self._streaming = None

    # --- streamed transactions --------------------------------------------------------

    def _stream_start(self, message: StreamStart, lsn: int) -> None:
        held = self._held.get(message.xid)
        if held is None:
            held = self._held[message.xid] = HeldTransaction(message.xid, self._stream_buffer_bytes)
        self._streaming = held

    def _stream_stop(self, message: StreamStop, lsn: int) -> None:
        self._streaming = None

    def _stream_abort(self, message: StreamAbort, lsn: int) -> None:
        held = self._held.get(message.xid)
        if held is None:
            return
        if message.subxid == message.xid:
            self._held.pop(message.xid).close()
        else:
            held.abort_subtransaction(message.subxid)

    def _stream_commit(self, message: StreamCommit, lsn: int) -> Iterator[None]:
        held = self._held.pop(message.xid, None) or HeldTransaction(message.xid, 0)
        self._replay = self._replayed(held, message)
        return self._replay

    def _replayed(self, held: HeldTransaction, commit: StreamCommit) -> Iterator[None]:
        try:
            self.txn = self.dispatcher.begin(commit.commit_lsn, commit.xid, commit.commit_time)
            parse_held, handlers = self.parser.parse_held, self._handlers
            for lsn, payload in held.frames():
                message = parse_held(payload)
                handlers[message.__class__](message, lsn)
                yield
            self.dispatcher.commit(self.txn, commit.end_lsn)
            self.txn = None
        finally:
            held.close()
            self._replay = None

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
            self.dispatcher.dispatch(
                self.txn, routes, INSERT, decoder.table_text, lsn, None, decoder.decode(message.new)
            )

    def _update(self, message: Update, lsn: int) -> None:
        decoder = self.relations.get(message.relid)
        routes = self.dispatcher.routes_for(decoder.table)
        if routes:
            old = None
            if message.old is not None:
                old = decoder.decode_key(message.old) if message.old_is_key else decoder.decode(message.old)
            new = decoder.decode(message.new)
            fill_unchanged_toast(new, old)
            self.dispatcher.dispatch(self.txn, routes, UPDATE, decoder.table_text, lsn, old, new)

    def _delete(self, message: Delete, lsn: int) -> None:
        decoder = self.relations.get(message.relid)
        routes = self.dispatcher.routes_for(decoder.table)
        if routes:
            old = decoder.decode_key(message.old) if message.old_is_key else decoder.decode(message.old)
            self.dispatcher.dispatch(self.txn, routes, DELETE, decoder.table_text, lsn, old, None)

    def _truncate(self, message: Truncate, lsn: int) -> None:
        for relid in message.relids:
            decoder = self.relations.get(relid)
            routes = self.dispatcher.routes_for(decoder.table)
            if routes:
                self.dispatcher.dispatch_truncate(
                    self.txn, routes, decoder.table_text, lsn, message.cascade, message.restart_identity
                )


class ReplicationThread(threading.Thread):
    """Runs the replication session; see the module docstring."""

    def __init__(
        self,
        *,
        connect: Callable[..., Any],
        slot: str,
        create_slot: Optional[str],
        plugin_options: Dict[str, str],
        protocol_version: int,
        dispatcher: Dispatcher,
        status_interval: float,
        shutdown_timeout: float,
        stream_buffer_bytes: int,
        reconnect_delay: Tuple[float, float],
        before_reconnect: Callable[[], None],
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        super().__init__(name=f"flash_wal-replication-{slot}", daemon=True)
        self._connect = connect
        self._slot = slot
        self._create_slot = create_slot  # "temporary", "persistent", or None to resume it
        self._temporary = create_slot == "temporary"
        self._plugin_options = plugin_options
        self._protocol_version = protocol_version
        self._dispatcher = dispatcher
        self._status_interval = status_interval
        self._shutdown_timeout = shutdown_timeout
        self._stream_buffer_bytes = stream_buffer_bytes
        self._keepalive_interval = status_interval  # refined from the server's wal_sender_timeout
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
        self._catalog: Any = None  # a normal connection for pg_type look-ups, opened on demand
        self._reconnect_delay = reconnect_delay
        self._before_reconnect = before_reconnect
        self.reconnecting = False
        self.reconnects = 0
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
        try:
            try:
                cursor = self._open_session(self._create_slot)
            except BaseException as exc:
                self._streaming_error = _as_flash_error(exc, "could not start replication")
                return
            finally:
                self._streaming.set()
            while cursor is not None:
                try:
                    self._run_session(cursor)
                    return
                except BaseException as exc:
                    if self._stopping:
                        return
                    if _is_publication_missing(exc):
                        if not self._temporary:
                            self._on_fatal(_publication_missing_error(exc, self._slot))
                            return
                        # A new temporary slot starts after the publication is made again.
                        logger.warning("%s; making it again and reconnecting", _one_line(exc))
                    elif not _is_connection_loss(exc):
                        self._on_fatal(_as_flash_error(exc, "replication stopped"))
                        return
                    else:
                        logger.warning("replication connection lost (%s); reconnecting", _one_line(exc))
                self._close_session()
                # What was read of unfinished transactions will be sent again (durable)
                # or is gone with the temporary slot: either way, never acknowledged.
                self._dispatcher.tracker.abandon_open()
                cursor = self._reconnect()
        finally:
            self._close_session()
            if self._catalog is not None:
                _close_quietly(self._catalog)
            with self._pipe_lock:
                self._pipe_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _open_session(self, create_slot: Optional[str]) -> Any:
        """Connect, create the slot if asked, start replication; return the cursor."""
        conn = self._connect(replication=True)
        with self._conn_lock:
            self._conn = conn
        cursor = conn.cursor()
        self._keepalive_interval = self._keepalive_interval_for(cursor)
        if create_slot is not None:
            temporary = sql.SQL(" TEMPORARY" if create_slot == "temporary" else "")
            cursor.execute(
                sql.SQL("CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput NOEXPORT_SNAPSHOT").format(
                    sql.Identifier(self._slot), temporary
                )
            )
            logger.debug("created the %s replication slot %s", create_slot, self._slot)
        try:
            cursor.start_replication(
                slot_name=self._slot, decode=False, options=self._plugin_options,
                status_interval=self._status_interval,
            )
        except psycopg2.Error as exc:
            if _is_invalidated(exc):
                raise invalidated_slot_error(self._slot, _one_line(exc)) from exc
            raise
        self._sent_lsn = 0
        return cursor

    def _run_session(self, cursor: Any) -> None:
        translator = None
        try:
            # The bytes of a SQL_ASCII database arrive unconverted (see connect()): a
            # UTF8 connection's casters read them as UTF-8, where an ASCII one would fail.
            sql_ascii = cursor.connection.encoding == "SQLASCII"
            cast_cursor = self._catalog_cursor() if sql_ascii else cursor.connection.cursor()
            casters = TypeCasters(cast_cursor, lookup=_lazy_lookup(self._catalog_cursor))
            parser = PgOutputParser(self._protocol_version)
            translator = ChangeTranslator(
                self._dispatcher, RelationCache(casters), parser, self._stream_buffer_bytes
            )
            self._stream(cursor, parser, translator)
            self._finish(cursor)
        finally:
            if translator is not None:
                translator.close()

    def _reconnect(self) -> Optional[Any]:
        """Open a new session, backing off between tries, until it works or we stop."""
        delay = self._reconnect_delay[0]
        self.reconnecting = True
        try:
            while not self._stopping:
                try:
                    self._before_reconnect()
                    cursor = self._open_session("temporary" if self._temporary else None)
                except (SlotInvalidatedError, ConfigurationError) as exc:
                    self._on_fatal(exc)
                    return None
                except (psycopg2.Error, OSError, FlashError) as exc:
                    self._close_session()
                    logger.warning("reconnecting failed (%s); next try in %.1f s", _one_line(exc), delay)
                else:
                    self.reconnects += 1
                    logger.info("reconnected (slot %s)", self._slot)
                    return cursor
                readable, _, _ = select.select([self._wake_r], [], [], delay)
                if readable:
                    _drain_pipe(self._wake_r)
                delay = min(delay * 2, self._reconnect_delay[1])
            return None
        finally:
            self.reconnecting = False

    def _catalog_cursor(self) -> Any:
        if self._catalog is None or self._catalog.closed:
            self._catalog = self._connect(replication=False)
        return self._catalog.cursor()

    def _close_session(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)

    def _stream(self, cursor: Any, parser: PgOutputParser, translator: ChangeTranslator) -> None:
        parse, handle = parser.parse, translator.handle
        read = cursor.read_message
        dispatcher = self._dispatcher
        waitables = [cursor.connection.fileno(), self._wake_r]
        dispatcher.tracker.on_advance = self._wake_if_idle
        replay: Optional[Iterator[None]] = None
        while not self._stopping:
            if not dispatcher.has_room():
                self._wait_for_room(cursor)
                continue
            if replay is not None:
                # A committed streamed transaction goes out before anything newer.
                if next(replay, StopIteration) is StopIteration:
                    replay = None
                continue
            message = read()
            if message is not None:
                payload = message.payload
                replay = handle(parse(payload), message.data_start, payload)
                continue
            dispatcher.flush()
            self._idle = True
            self._acknowledge(cursor, force=True)
            readable, _, _ = select.select(waitables, [], [], self._status_interval)
            self._idle = False
            if self._wake_r in readable:
                _drain_pipe(self._wake_r)

    def _keepalive_interval_for(self, cursor: Any) -> float:
        """How often to send status updates while not reading.

        psycopg2 answers the server's keepalive requests only from read_message();
        while reading is paused those requests go unseen, so unprompted updates must
        come often enough for the server's wal_sender_timeout.
        """
        cursor.execute("SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'wal_sender_timeout'")
        timeout_ms = cursor.fetchone()[0]
        if timeout_ms <= 0:
            return self._status_interval
        return min(self._status_interval, timeout_ms / 1000 / 3)

    def _wait_for_room(self, cursor: Any) -> None:
        """The workers are behind: read nothing new, but keep the server answered."""
        deadline = time.monotonic() + self._keepalive_interval
        while not self._stopping and not self._dispatcher.has_room():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._acknowledge(cursor, force=True, keepalive=True)
                deadline = time.monotonic() + self._keepalive_interval
                continue
            self._dispatcher.tracker.wait_for_room(self._dispatcher.max_queued_events, remaining)
        self._acknowledge(cursor, force=True)

    def _acknowledge(self, cursor: Any, *, force: bool, keepalive: bool = False) -> None:
        acked = self._dispatcher.tracker.acked_lsn
        if acked > self._sent_lsn or keepalive:
            cursor.send_feedback(write_lsn=acked, flush_lsn=acked, apply_lsn=acked, force=force)
            if acked > self._sent_lsn:
                logger.debug("acknowledged up to %s", format_lsn(acked))
            self._sent_lsn = acked

    def _finish(self, cursor: Any) -> None:
        """Give in-flight callbacks up to shutdown_timeout, then acknowledge what finished."""
        deadline = time.monotonic() + self._shutdown_timeout
        self._dispatcher.flush()
        while True:
            remaining = deadline - time.monotonic()
            if self._dispatcher.drain(min(max(remaining, 0), self._keepalive_interval)):
                break
            if remaining <= 0:
                self.drained = False
                logger.warning(
                    "%d events were still queued or being handled after shutdown_timeout=%.1f s; %s",
                    self._dispatcher.tracker.queued_events, self._shutdown_timeout,
                    "the temporary slot goes, and with it the events not yet handled"
                    if self._temporary else
                    "their transactions are not acknowledged, and the next start delivers them again",
                )
                break
            self._acknowledge(cursor, force=True, keepalive=True)
        self._acknowledge(cursor, force=True)


def _is_connection_loss(exc: BaseException) -> bool:
    # AdminShutdown (pg_terminate_backend, server shutdown) is an OperationalError too;
    # a server that ended the stream cleanly (fast shutdown) makes psycopg2 report
    # that no COPY is in progress any more, and one that went mid-read leaves libpq
    # with no message at all.
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return True
    return isinstance(exc, psycopg2.DatabaseError) and (
        "no COPY in progress" in str(exc) or "no message from the libpq" in str(exc)
    )


def _is_publication_missing(exc: BaseException) -> bool:
    # Before PostgreSQL 18, decoding a change after the publication was dropped fails.
    return (
        isinstance(exc, psycopg2.Error) and exc.pgcode == psycopg2.errorcodes.UNDEFINED_OBJECT
        and "publication" in str(exc)
    )


def _publication_missing_error(exc: BaseException, slot: str) -> ReplicationError:
    error = ReplicationError(
        f"{_one_line(exc)}: it was dropped while slot {slot!r} still needed it, and the server "
        "cannot decode that slot's changes past this point without it. Drop the slot (Driver.drop "
        "or 'flash-wal cleanup') and start again; changes made since the drop are lost"
    )
    error.__cause__ = exc
    return error


def _is_invalidated(exc: psycopg2.Error) -> bool:
    message = str(exc)
    return "invalidated" in message or "can no longer get changes" in message


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass


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
