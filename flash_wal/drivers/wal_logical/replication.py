"""The replication thread: the one owner of the replication connection.

It connects, creates the slot if asked, starts pgoutput and then loops: read a frame
without blocking, parse it, hand it to the translator; between frames, tell the server
how far the callbacks have got when :class:`~.feedback.StatusPolicy` says so; when
nothing is waiting, hand partial batches to the workers and sleep in ``select`` on the
socket and a self-pipe, so ``stop()`` wakes it at once. All socket I/O of the
replication connection happens here, closing included.

A lost connection is not the end: the thread finishes what it holds (the replay of a
committed streamed transaction), reconnects with backoff, and resumes after the last
transaction it received whole (see :mod:`.translator`).
"""

import logging
import select
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from ...decoding import RelationCache, TypeCasters, lookup_keys_with, lookup_types_with
from ...errors import ConfigurationError, FlashError, ReplicationError, SlotInvalidatedError, one_line
from ...events import format_lsn
from ...pgoutput import PgOutputParser
from ...waker import Waker
from ..base import Sink
from .failures import (
    PublicationGap, as_flash_error, is_connection_loss, is_invalidated, is_publication_missing,
    publication_missing_error,
)
from .feedback import StatusPolicy, heartbeat_interval
from .catalog import invalidated_slot_error, wal_sender_timeout_ms
from .translator import ChangeTranslator
from .wire import Received, ReplicationWire

logger = logging.getLogger(__name__)


class ReplicationThread(threading.Thread):
    """Runs the replication sessions; see the module docstring."""

    def __init__(
        self,
        *,
        connect: Callable[..., Any],
        slot: str,
        publications: Sequence[str],
        create_slot: Optional[str],
        plugin_options: Dict[str, str],
        protocol_version: int,
        sink: Sink,
        status_interval: float,
        shutdown_timeout: float,
        setup_timeout: float,
        stream_buffer_bytes: int,
        reconnect_delay: Tuple[float, float],
        before_reconnect: Callable[[], None],
        check_publication: Callable[[], None],
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        super().__init__(name=f"flash_wal-replication-{slot}", daemon=True)
        self._connect = connect
        self._slot = slot
        self._publications = tuple(publications)
        self._create_slot = create_slot  # "temporary", "persistent", or None to resume it
        self._temporary = create_slot == "temporary"
        self._plugin_options = plugin_options
        self._protocol_version = protocol_version
        self._sink = sink
        self._status_interval = status_interval
        self._shutdown_timeout = shutdown_timeout
        self._setup_timeout = setup_timeout
        self._policy = StatusPolicy(status_interval)
        self._on_fatal = on_fatal
        self._check_publication = check_publication
        self._next_check = 0.0
        self._publication_gap: Optional[str] = None  # the server's warning, once it came
        self.received = Received()
        self._waker = Waker()
        self._stopping = False
        self._idle = False  # in select(): an advanced acknowledgement should wake it
        self._first_session = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._conn: Any = None
        self._conn_lock = threading.Lock()  # _conn is read by other threads to cancel
        self._in_setup = False  # waiting on the server to create the slot: cancel to stop
        self._catalog: Any = None  # a normal connection for pg_type look-ups, opened on demand
        self._reconnect_delay = reconnect_delay
        self._before_reconnect = before_reconnect
        self._stream_buffer_bytes = stream_buffer_bytes
        self._translator: Optional[ChangeTranslator] = None  # made with the first session
        self._replay: Optional[Iterator[None]] = None
        self.reconnecting = False
        self.reconnects = 0
        self.drained = True

    # --- called from other threads ----------------------------------------------------

    def start_session(self, timeout: float) -> None:
        """Start the thread; return once the first session has started, or raise why not."""
        self.start()
        if not self._first_session.wait(timeout):
            self.stop()
            self._first_session.wait()
            raise ConfigurationError(
                f"the replication slot could not be created within setup_timeout={timeout:g} s: "
                "the server waits for transactions that were open at that moment to end. Finish "
                "or cancel long-running transactions (see pg_stat_activity), or raise "
                "DriverConfig(setup_timeout=...)"
            )
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        """Ask the thread to stop reading, drain callbacks, acknowledge and disconnect."""
        self._stopping = True
        self._cancel_setup()
        self._waker.wake()
        self._sink.wake()

    def _cancel_setup(self) -> None:
        # Creating a slot waits for every open transaction to end. Cancelling is the
        # one call psycopg2 allows on a connection from another thread.
        with self._conn_lock:
            if self._in_setup and self._conn is not None:
                self._conn.cancel()

    def _wake_if_idle(self) -> None:
        # Workers call this when an acknowledgement moves: the policy learns an update
        # is due, and a sleeping thread wakes to send it.
        self._policy.moved()
        if self._idle:
            self._waker.wake()

    def _server_warning(self, message: str) -> None:
        # Called by libpq between frames. PostgreSQL 18 warns, and skips the changes,
        # when it decodes WAL written while the publication did not exist.
        logger.warning("the server warns: %s", message)
        if any(f'"{name}"' in message for name in self._publications):
            self._publication_gap = message
            self._policy.next_at = float("-inf")  # stop at the next frame, before any update

    @property
    def _translation(self) -> ChangeTranslator:
        translator = self._translator
        assert translator is not None, "the first session makes it"
        return translator

    # --- the thread -------------------------------------------------------------------

    def run(self) -> None:
        wire: Optional[ReplicationWire]
        try:
            try:
                wire = self._open_session(self._create_slot)
            except BaseException as exc:
                self._start_error = as_flash_error(exc, "could not start replication")
                return
            finally:
                self._first_session.set()
            while wire is not None:
                try:
                    self._read_session(wire)
                    self._finish(wire)
                    return
                except PublicationGap as exc:
                    self._on_fatal(exc)
                    return
                except BaseException as exc:
                    if self._stopping:
                        return
                    if is_publication_missing(exc):
                        self._on_fatal(publication_missing_error(exc, self._slot))
                        return
                    if not is_connection_loss(exc):
                        self._on_fatal(as_flash_error(exc, "replication stopped"))
                        return
                    logger.warning("replication connection lost (%s); reconnecting", one_line(exc))
                if not self._finish_replay_offline():
                    return
                self._translation.interrupted()
                self._close_session()
                wire = self._reconnect()
        finally:
            if self._translator is not None:
                self._translator.close()
            self._close_session()
            if self._catalog is not None:
                _close_quietly(self._catalog)
            self._waker.close()

    def _open_session(self, create_slot: Optional[str]) -> ReplicationWire:
        """Connect, create the slot if asked, start replication; return the wire."""
        conn = self._connect(replication=True)
        with self._conn_lock:
            self._conn = conn
        cursor = conn.cursor()
        heartbeat = heartbeat_interval(self._status_interval, wal_sender_timeout_ms(cursor))
        if create_slot is not None:
            temporary = sql.SQL(" TEMPORARY" if create_slot == "temporary" else "")
            with self._conn_lock:
                self._in_setup = True
            try:
                cursor.execute(
                    sql.SQL("CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput NOEXPORT_SNAPSHOT").format(
                        sql.Identifier(self._slot), temporary
                    )
                )
            finally:
                with self._conn_lock:
                    self._in_setup = False
            logger.debug("created the %s replication slot %s", create_slot, self._slot)
        if self._translator is None:
            # Its casters keep this cursor: they read settings of its connection, never
            # the server, so they serve every later session too.
            # The bytes of a SQL_ASCII database arrive unconverted (see connect()): a
            # UTF8 connection's casters read them as UTF-8, where an ASCII one would fail.
            sql_ascii = conn.encoding == "SQLASCII"
            cast_cursor = self._catalog_cursor() if sql_ascii else conn.cursor()
            casters = TypeCasters(cast_cursor, lookup=_lazy(lookup_types_with, self._catalog_cursor))
            # Each Relation message looks the table's key up again: see decoding.default_key.
            relations = RelationCache(casters, key_lookup=_lazy(lookup_keys_with, self._catalog_cursor))
            parser = PgOutputParser(self._protocol_version)
            self._translator = ChangeTranslator(self._sink, relations, parser, self._stream_buffer_bytes)
        start_lsn = max(self._translation.received_lsn, self._sink.acked_lsn)
        try:
            cursor.start_replication(
                slot_name=self._slot, decode=False, start_lsn=start_lsn, options=self._plugin_options,
            )
        except psycopg2.Error as exc:
            if is_invalidated(exc):
                raise invalidated_slot_error(self._slot, one_line(exc)) from exc
            raise
        self._policy = _carried_over(self._policy, heartbeat)
        return ReplicationWire(conn, self._server_warning, self.received)

    def _reconnect(self) -> Optional[ReplicationWire]:
        """Open a new session, backing off between tries, until it works or we stop."""
        delay = self._reconnect_delay[0]
        self.reconnecting = True
        lost_at = time.monotonic()
        try:
            while not self._stopping:
                try:
                    self._before_reconnect()
                    wire = self._open_session_within_setup_timeout()
                except (SlotInvalidatedError, ConfigurationError, ReplicationError) as exc:
                    self._on_fatal(exc)
                    return None
                except (psycopg2.Error, OSError, FlashError) as exc:
                    self._close_session()
                    if self._stopping:
                        return None
                    logger.warning("reconnecting failed (%s); next try in %.1f s", one_line(exc), delay)
                else:
                    self.reconnects += 1
                    if self._temporary:
                        self._translation.new_slot()
                    logger.info("reconnected (slot %s) after %.1f s", self._slot, time.monotonic() - lost_at)
                    return wire
                readable, _, _ = select.select([self._waker], [], [], delay)
                if readable:
                    self._waker.drain()
                delay = min(delay * 2, self._reconnect_delay[1])
            return None
        finally:
            self.reconnecting = False

    def _open_session_within_setup_timeout(self) -> ReplicationWire:
        # A temporary slot made again waits for the transactions open at that moment,
        # like the first one: past setup_timeout the attempt is cancelled and retried.
        timer = threading.Timer(self._setup_timeout, self._cancel_setup)
        timer.daemon = True
        timer.start()
        try:
            return self._open_session("temporary" if self._temporary else None)
        finally:
            timer.cancel()

    def _catalog_cursor(self) -> Any:
        if self._catalog is None or self._catalog.closed:
            self._catalog = self._connect(replication=False)
        return self._catalog.cursor()

    def _close_session(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)

    def _read_session(self, wire: ReplicationWire) -> None:
        translator = self._translation
        parse, handle = translator.parser.parse, translator.handle
        read = wire.read
        sink, clock, policy = self._sink, time.monotonic, self._policy  # the session's policy
        waker = self._waker
        waitables: List[Any] = [wire.fileno(), waker]
        sink.on_acknowledged = self._wake_if_idle
        while not self._stopping:
            if not sink.has_room():
                self._wait_for_room(wire)
                continue
            replay = self._replay
            if replay is not None:
                # A committed streamed transaction goes out before anything newer.
                if next(replay, StopIteration) is StopIteration:
                    self._replay = None
                if clock() >= policy.next_at:
                    self._report(wire)
                continue
            frame = read()
            if frame is not None:
                data_start, payload = frame
                self._replay = handle(parse(payload), data_start, payload)
                if wire.reply_requested or clock() >= policy.next_at:
                    self._report(wire)
                continue
            sink.flush()
            self._report(wire)
            self._idle = True
            readable, _, _ = select.select(waitables, [], [], policy.wait_time(clock()))
            self._idle = False
            if waker in readable:
                waker.drain()
        self._read_to_commit(wire)

    def _read_to_commit(self, wire: ReplicationWire) -> None:
        """Stopped while a transaction was being received: read the rest of it (its
        Commit is on its way already, pgoutput sends a transaction once it committed)
        so that what was delivered of it can be acknowledged; shutdown_timeout at most."""
        translator, sink = self._translation, self._sink
        deadline = time.monotonic() + self._shutdown_timeout
        while translator.txn is not None and self._replay is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if not sink.has_room():
                sink.wait_for_room(min(remaining, 0.1))
                continue
            frame = wire.read()
            if frame is None:
                select.select([wire.fileno()], [], [], min(remaining, 0.1))
                continue
            data_start, payload = frame
            self._replay = translator.handle(translator.parser.parse(payload), data_start, payload)

    def _report(self, wire: ReplicationWire, *, force: bool = False) -> None:
        """Send a status update if one is due: the position the policy allows."""
        if self._publication_gap is not None:
            raise PublicationGap(
                f"the server skipped changes because a publication of {', '.join(self._publications)} did not exist "
                f"for part of the WAL ({self._publication_gap}): it was dropped while slot "
                f"{self._slot!r} still needed it. Nothing past that point was acknowledged. Drop the "
                "slot (Driver.drop or 'flash-wal cleanup') and start again; the skipped changes are lost"
            )
        policy, now = self._policy, time.monotonic()
        settled = self._sink.settled and self._translation.settled
        position = policy.position(self._sink.acked_lsn, settled, wire.server_wal_end)
        if not (force or policy.due(now, position, wire.reply_requested)):
            return
        if now >= self._next_check:
            # Someone may have taken a table out of the publication: the server would
            # skip its changes without a word. Raises if so.
            self._next_check = now + self._status_interval
            self._check_publication()
        wire.send_status(position, position)
        if position > policy.sent_lsn:
            logger.debug("acknowledged up to %s", format_lsn(position))
        policy.sent(now, position)

    def _wait_for_room(self, wire: ReplicationWire) -> None:
        """The workers are behind: read nothing new, but keep the server answered."""
        sink = self._sink
        while not self._stopping and not sink.has_room():
            self._report(wire)
            sink.wait_for_room(max(self._policy.wait_time(time.monotonic()), 0.001))

    def _finish_replay_offline(self) -> bool:
        """The connection is gone: deliver the rest of a committed streamed transaction
        before reconnecting (the next session starts after it). False if stopped first."""
        sink = self._sink
        while self._replay is not None:
            if self._stopping:
                return False
            if not sink.has_room():
                sink.wait_for_room(0.5)
                continue
            if next(self._replay, StopIteration) is StopIteration:
                self._replay = None
        return True

    def _finish(self, wire: ReplicationWire) -> None:
        """Give in-flight callbacks up to shutdown_timeout, then acknowledge what finished."""
        deadline = time.monotonic() + self._shutdown_timeout
        sink = self._sink
        sink.flush()
        while True:
            remaining = deadline - time.monotonic()
            if sink.drain(min(max(remaining, 0), self._policy.wait_time(time.monotonic()) or 0.001)):
                break
            if remaining <= 0:
                self.drained = False
                logger.warning(
                    "%d events were still queued or being handled after shutdown_timeout=%.1f s; %s",
                    sink.queued_events, self._shutdown_timeout,
                    "the temporary slot goes, and with it the events not yet handled"
                    if self._temporary else
                    "their transactions are not acknowledged, and the next start delivers them again",
                )
                break
            self._report(wire)
        self._report(wire, force=True)
        if not self._temporary and not wire.end(max(deadline - time.monotonic(), 1.0)):
            logger.info("the server did not end the session within the shutdown time: its last "
                        "acknowledgement may not be recorded, and the next start may deliver some events again")


def _carried_over(policy: StatusPolicy, heartbeat: float) -> StatusPolicy:
    """The policy for a new session: what was sent stays sent; the next update is due at once."""
    fresh = StatusPolicy(heartbeat)
    fresh.sent_lsn = policy.sent_lsn
    return fresh


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass


def _lazy(lookup_with: Callable[[Any], Callable[[Any], Any]], catalog_cursor: Callable[[], Any]) -> Callable[[Any], Any]:
    """A catalog look-up that opens the catalog connection only when first needed."""

    def lookup(what: Any) -> Any:
        return lookup_with(catalog_cursor())(what)

    return lookup
