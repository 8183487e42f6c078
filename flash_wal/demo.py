"""``flash-wal demo``: watch row changes stream from PostgreSQL to Python callbacks.

The demo starts a throwaway PostgreSQL server (:mod:`flash_wal.embedded`) unless it is
given a DSN, creates a demo table, listens to it with a :class:`~flash_wal.Client`, and
prints every event as a callback receives it, while a second thread writes a short
scenario (inserts, updates, deletes, a TRUNCATE) and then one change per interval.

It stops on SIGINT (Ctrl-C), SIGTERM or after ``duration`` seconds, and always cleans
up: the writer stops, the client closes (removing its replication slot and
publication), the demo table is dropped on an existing server, and the embedded
server is stopped and its directory removed.

This is the command line, so it prints; the formatting helpers
(:func:`format_event`, :func:`format_lsn`, :func:`format_value`) are reusable.
"""

import collections
import datetime
import os
import secrets
import shutil
import sys
import threading
import time
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Optional, Sequence, TextIO

import attr
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from .cli import StopSignals
from .client import Client, ClientConfig
from .connection import cannot_connect, mask_dsn
from .drivers.wal_logical import Driver, DriverConfig
from .errors import ConfigurationError, FlashError, one_line
from .events import DeleteEvent, Event, InsertEvent, TruncateEvent, UpdateEvent, format_lsn
from .listener import Listener
from .operations import Operation

__all__ = ["DemoOptions", "run_demo", "format_event", "format_lsn", "format_value"]

#: Seconds between the steps of the opening scenario.
STEP_PAUSE = 0.35
#: Longest shown value; longer ones are cut with "...".
MAX_VALUE_CHARS = 40
#: Line width when stdout is not a terminal.
DEFAULT_WIDTH = 200
#: Seconds to wait, when stopping, for events of changes already written.
CATCH_UP_TIMEOUT = 5.0
#: Seconds to wait for the writer thread to finish its statement when stopping.
WRITER_JOIN_TIMEOUT = 15.0

TABLE_COLUMNS = """
    id bigserial PRIMARY KEY,
    title text NOT NULL,
    status text,
    views int DEFAULT 0,
    price numeric(10,2),
    tags text[],
    meta jsonb,
    published_at timestamptz
"""

_OPERATIONS = (Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.TRUNCATE)


@attr.s(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    """What ``flash-wal demo`` was asked to do."""

    #: An existing server to use; None starts an embedded one.
    dsn: Optional[str] = attr.ib(default=None, repr=lambda dsn: repr(dsn and mask_dsn(dsn)))
    #: Seconds of streaming before stopping; None runs until a signal.
    duration: Optional[float] = attr.ib(default=None)
    #: Seconds between the writes that follow the opening scenario.
    interval: float = attr.ib(default=1.0)
    verbose: bool = attr.ib(default=False)
    #: Where events and messages go (stdout by default).
    out: Optional[TextIO] = attr.ib(default=None)


def run_demo(options: DemoOptions) -> int:
    """Run the demo; returns the exit status (0). Raises FlashError on failures."""
    return _Demo(options).run()


# --- formatting ------------------------------------------------------------------------


def format_value(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A short text showing ``value`` and its Python type.

    Mostly ``repr``; dates and times are shown as ``datetime('2025-01-01
    12:00:00+00:00')`` rather than their long constructor call. Cut to ``limit``
    characters.
    """
    if isinstance(value, datetime.datetime):
        text = f"datetime('{value.isoformat(sep=' ')}')"
    elif isinstance(value, (datetime.date, datetime.time)):
        text = f"{type(value).__name__}('{value.isoformat()}')"
    elif isinstance(value, datetime.timedelta):
        text = f"timedelta('{value}')"
    else:
        text = repr(value)
    if len(text) > limit:
        text = text[: max(limit - 3, 1)] + "..."
    return text


def _fields(row: Dict[str, Any], columns: Iterable[str]) -> List[str]:
    return [f"{column}={format_value(row[column])}" for column in columns if column in row]


def _fit(parts: Sequence[str], width: int, sep: str = " ") -> str:
    """Join ``parts`` with ``sep``; if that is longer than ``width``, end with ``...``."""
    kept: List[str] = []
    length = 0
    for i, part in enumerate(parts):
        added = len(part) + (len(sep) if kept else 0)
        room_for_dots = 0 if i == len(parts) - 1 else len(sep) + 3
        if length + added + room_for_dots > width:
            if not kept:
                return part[: max(width - 3, 1)] + "..."
            return sep.join(kept) + sep + "..."
        kept.append(part)
        length += added
    return sep.join(kept)


def _changed_columns(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    changed = []
    for column, value in new.items():
        if column not in old:
            changed.append(column)
            continue
        before = old[column]
        if type(before) is not type(value) or before != value:
            changed.append(column)
    return changed


def format_event(event: Event, key_columns: Sequence[str] = ("id",), width: int = DEFAULT_WIDTH) -> str:
    """One line describing ``event``, like::

          INSERT    public.posts  id=1 title='Hello' ...   (xid 750, lsn 0/16E4A30)

    Updates show the key columns and, for the changed columns only, ``old -> new``;
    deletes show the old row; truncates their flags. Long values and long rows are cut.
    """
    head = f"  {str(event.operation):<8}  {event.table}  "
    tail = f"   (xid {event.xid if event.xid is not None else '?'}, lsn {format_lsn(event.lsn)})"
    room = max(width - len(head) - len(tail), 40)
    if isinstance(event, InsertEvent):
        body = _fit(_fields(event.new, event.new), room)
    elif isinstance(event, UpdateEvent):
        keys = _fields(event.new, key_columns)
        if event.old is None:
            # No old row from the server (REPLICA IDENTITY DEFAULT and an unchanged key).
            others = [c for c in event.new if c not in key_columns]
            body = _fit(keys + ["new:"] + _fields(event.new, others), room)
        else:
            changes = [
                f"{column}: {format_value(event.old.get(column, '?'))} -> {format_value(event.new[column])}"
                for column in _changed_columns(event.old, event.new)
            ] or ["(no value changed)"]
            body = _fit([" ".join(keys)] + changes if keys else changes, room, sep="  ")
    elif isinstance(event, DeleteEvent):
        body = _fit(_fields(event.old, event.old), room)
    elif isinstance(event, TruncateEvent):
        body = f"cascade={event.cascade} restart_identity={event.restart_identity}"
    else:  # pragma: no cover - every row event is one of the above
        body = repr(event)
    return head + body + tail



# --- output ----------------------------------------------------------------------------


class _Printer:
    """Prints whole lines from any thread, flushed at once.

    If the reader goes away (``flash-wal demo | head``), printing stops and
    ``broken`` is set so that the demo stops too.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.broken = False
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            if self.broken:
                return
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.broken = True
                self._silence()

    def width(self) -> int:
        try:
            if self.out.isatty():
                return max(shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns, 80)
        except (AttributeError, ValueError, OSError):
            pass
        return DEFAULT_WIDTH

    def _silence(self) -> None:
        # Point the descriptor at /dev/null so that the interpreter's final flush of
        # the buffered rest does not fail again with a noisy BrokenPipeError.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)
        except (AttributeError, ValueError, OSError):
            pass


class _Tally:
    """Events received, by operation; lets the main thread wait for a count."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.by_operation: Dict[Operation, int] = collections.Counter()
        self.total = 0

    def add(self, operation: Operation) -> None:
        with self._cond:
            self.by_operation[operation] += 1
            self.total += 1
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.total >= count, timeout)

    def summary(self) -> str:
        with self._cond:
            parts = ", ".join(f"{op} {self.by_operation.get(op, 0)}" for op in _OPERATIONS)
            return f"{self.total} event{'s' if self.total != 1 else ''} received ({parts})"


# --- the writer ------------------------------------------------------------------------


class _Halted(Exception):
    """The writer was asked to stop."""


class _Writer(threading.Thread):
    """Writes the scenario, then one change per interval, on its own connection."""

    def __init__(self, dsn: str, table: sql.Composable, printer: _Printer, interval: float,
                 pause: float = STEP_PAUSE) -> None:
        super().__init__(name="flash-wal-demo-writer", daemon=True)
        self.dsn = dsn
        self.table = table
        self.printer = printer
        self.interval = interval
        self.pause = pause
        #: Events the changes written so far must produce (one per row; one per TRUNCATE).
        self.expected = 0
        self.error: Optional[FlashError] = None
        self._halt = threading.Event()
        self._cursor: Any = None
        self._posts = 0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=10, application_name="flash_wal_demo_writer")
        except psycopg2.Error as exc:
            self.error = cannot_connect(self.dsn, exc)
            return
        try:
            conn.autocommit = True
            self._cursor = conn.cursor()
            self._scenario()
            self._keep_writing()
        except _Halted:
            pass
        except psycopg2.Error as exc:
            self.error = FlashError(f"the demo writer failed: {one_line(exc)}")
        finally:
            conn.close()

    # The opening scenario: each step says what it does, then its events follow.

    def _scenario(self) -> None:
        t = self.table
        (first,) = self._step(
            "insert a post",
            sql.SQL("INSERT INTO {} (title, status, price, tags, meta) VALUES "
                    "('Hello, flash_wal', 'draft', 9.99, ARRAY['intro', 'python'], "
                    """'{{"lang": "en"}}') RETURNING id""").format(t),
        )
        second, third = self._step(
            "insert two posts in one transaction (one xid)",
            sql.SQL("INSERT INTO {} (title, status, views, price, tags, meta) VALUES "
                    "('Logical replication 101', 'draft', 3, 19.50, ARRAY['postgres'], "
                    """'{{"level": 2}}'), """
                    "('Scratch notes', NULL, NULL, NULL, NULL, NULL) RETURNING id").format(t),
        )
        self._step(f"count a view of post {first}",
                   sql.SQL("UPDATE {} SET views = views + 1 WHERE id = %s").format(t), (first,))
        self._step(f"publish post {first}: its status changes",
                   sql.SQL("UPDATE {} SET status = 'published', published_at = date_trunc('second', now()) "
                           "WHERE id = %s").format(t), (first,))
        self._step(f"reprice and retag post {second}",
                   sql.SQL("UPDATE {} SET price = 24.00, tags = array_append(tags, 'wal'), "
                           """meta = meta || '{{"level": 3}}' WHERE id = %s""").format(t), (second,))
        self._step(f"delete post {third}", sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (third,))
        self._step("truncate the table, restarting its id sequence",
                   sql.SQL("TRUNCATE {} RESTART IDENTITY").format(t), rows=1)
        self.printer.line(f"-- scenario done; from now on one change every {self.interval:g} s")

    def _step(self, note: str, query: sql.Composable, params: Any = None, rows: Optional[int] = None) -> List[Any]:
        if self._halt.is_set():
            raise _Halted()
        self.printer.line(f"-- {note}")
        result = self._execute(query, params, rows)
        if self._halt.wait(self.pause):
            raise _Halted()
        return result

    def _execute(self, query: sql.Composable, params: Any = None, rows: Optional[int] = None) -> List[Any]:
        cursor = self._cursor
        cursor.execute(query, params)
        self.expected += rows if rows is not None else max(cursor.rowcount, 0)
        return [row[0] for row in cursor.fetchall()] if cursor.description else []

    # Then one change per interval, in a cycle: insert a post, count views of the
    # newest, publish it, and delete the oldest once there are a few (else insert).

    def _keep_writing(self) -> None:
        t = self.table
        step = 0
        while not self._halt.wait(self.interval):
            step += 1
            phase = step % 4
            if phase == 2:
                self._execute(sql.SQL("UPDATE {} SET views = views + %s WHERE id = "
                                      "(SELECT max(id) FROM {})").format(t, t), (step % 7 + 1,))
            elif phase == 3:
                self._execute(sql.SQL("UPDATE {} SET status = 'published', "
                                      "published_at = date_trunc('second', now()) "
                                      "WHERE id = (SELECT max(id) FROM {})").format(t, t))
            elif phase == 0 and self._execute(sql.SQL("SELECT count(*) FROM {}").format(t), rows=0)[0] >= 3:
                self._execute(sql.SQL("DELETE FROM {} WHERE id = (SELECT min(id) FROM {})").format(t, t))
            else:
                self._posts += 1
                n = self._posts
                self._execute(
                    sql.SQL("INSERT INTO {} (title, status, price, tags, meta) VALUES "
                            "(%s, 'draft', %s, %s, %s::jsonb)").format(t),
                    (f"Live post {n}", Decimal(n * 125) / 100 + Decimal("0.99"),
                     ["live", f"n{n}"], f'{{"n": {n}}}'),
                )


# --- the demo --------------------------------------------------------------------------


class _Demo:
    """One run of the demo: set-up, streaming, and a clean-up that always runs."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.printer = _Printer(options.out if options.out is not None else sys.stdout)
        self.tally = _Tally()
        token = f"{os.getpid()}_{secrets.token_hex(2)}"
        #: Slot, publication prefix and (on an existing server) table share this name.
        self.name = f"flash_wal_demo_{token}"
        self.embedded = options.dsn is None
        self.table_name = "posts" if self.embedded else self.name
        self.table = sql.Identifier("public", self.table_name)
        self.width = self.printer.width()
        self.stop_reason = ""
        # What has been set up, so far; the clean-up undoes exactly that.
        self._dsn = options.dsn or ""
        self._pg: Any = None
        self._conn: Any = None
        self._table_created = False
        self._client: Optional[Client] = None
        self._writer: Optional[_Writer] = None

    def on_event(self, event: Event) -> None:
        """The callback; flash_wal runs it on a worker thread."""
        self.printer.line(format_event(event, width=self.width))
        self.tally.add(event.operation)

    def run(self) -> int:
        failure: Optional[BaseException] = None
        elapsed = 0.0
        with StopSignals("the demo cleans up") as signals:
            try:
                began = self._set_up(signals)
                if signals.received is None:
                    self._writer = _Writer(self._dsn, self.table, self.printer, self.options.interval)
                    self._writer.start()
                    self._wait(signals, began)
                    self._finish_writing()
                else:
                    self.stop_reason = signals.received
                elapsed = time.monotonic() - began
            except BaseException as exc:
                failure = exc
            finally:
                # From here on a signal only gets a "please wait": nothing may be left behind.
                if signals.received is None:
                    signals.received = "cleanup"
                cleanup_errors = self._clean_up()
        if failure is not None:
            for error in cleanup_errors:
                print(f"flash-wal: warning: {error}", file=sys.stderr)
            if isinstance(failure, FlashError) or not isinstance(failure, Exception):
                raise failure
            raise FlashError(f"the demo failed: {type(failure).__name__}: {failure}") from failure
        if cleanup_errors:
            raise FlashError("; ".join(cleanup_errors))
        self._summary(elapsed)
        return 0

    def _set_up(self, signals: StopSignals) -> float:
        """Server, table, client; returns the monotonic time streaming began."""
        dsn = self.options.dsn
        if dsn is None:
            from .embedded import EmbeddedPostgres

            server = EmbeddedPostgres()
            try:
                server.bin_dir  # fails at once, with what to install, if the wheel is missing
            except ConfigurationError as exc:
                raise ConfigurationError(f"{exc}; or pass --dsn DSN to use an existing server") from None
            self.printer.line("Starting a throwaway PostgreSQL server...")
            self._pg = server
            self._pg.start()
            dsn = self._pg.dsn
        self._dsn = dsn
        self._conn = self._connect(dsn)
        version = self._query_one(self._conn, "SHOW server_version").split()[0]
        self._create_table(self._conn)
        self._table_created = True

        listener = Listener(table=f"public.{self.table_name}")
        listener.on(Operation.ALL, self.on_event)
        self._client = Client(ClientConfig(
            database_cnx=dsn,
            driver=Driver(DriverConfig(publication_slot_prefix=self.name, replication_slot=self.name)),
            shutdown_timeout=5.0,
        ))
        self._client.attach(listener)
        self._client.start()
        began = time.monotonic()
        self._banner(version, dsn, self._pg, self._client)
        return began

    def _wait(self, signals: StopSignals, began: float) -> None:
        """Until a signal, the end of --duration, or a failure (raised)."""
        assert self._client is not None and self._writer is not None
        duration = self.options.duration
        deadline = None if duration is None else began + duration
        while True:
            if signals.received is not None:
                self.stop_reason = signals.received
                return
            if self.printer.broken:
                self.stop_reason = "output closed"
                return
            if self._writer.error is not None:
                raise self._writer.error
            remaining = 0.1 if deadline is None else min(deadline - time.monotonic(), 0.1)
            if remaining <= 0:
                self.stop_reason = f"--duration {duration:g}"
                return
            try:
                ended = self._client.wait(remaining)  # re-raises a fatal replication error
            except FlashError:
                raise
            except Exception as exc:
                raise FlashError(f"replication failed: {exc}") from exc
            if ended:
                raise FlashError("the replication stream ended unexpectedly")

    def _finish_writing(self) -> None:
        """Stop the writer, then wait (briefly) for the events of what it wrote."""
        writer = self._writer
        assert writer is not None
        writer.stop()
        writer.join(WRITER_JOIN_TIMEOUT)
        if writer.error is not None:
            raise writer.error
        if not self.printer.broken and not self.tally.wait_for(writer.expected, CATCH_UP_TIMEOUT):
            self.printer.line(
                f"-- {writer.expected - self.tally.total} event(s) had not arrived "
                f"{CATCH_UP_TIMEOUT:g} s after the last write"
            )

    def _clean_up(self) -> List[str]:
        """Undo whatever was set up, in reverse order; returns what failed."""
        errors: List[str] = []
        if self._writer is not None:
            self._writer.stop()
            self._writer.join(WRITER_JOIN_TIMEOUT)
            if self._writer.is_alive():
                errors.append("the writer thread did not stop")
        if self._client is not None:
            try:
                self._client.close()  # drops the slot and the publication
            except Exception as exc:
                errors.append(f"closing the client failed: {exc}")
        if self._conn is not None:
            if self._table_created and not self.embedded:
                try:
                    with self._conn.cursor() as cursor:
                        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table))
                except psycopg2.Error as exc:
                    errors.append(f"could not drop the demo table public.{self.table_name}: {one_line(exc)}")
            self._conn.close()
        if self._pg is not None:
            try:
                self._pg.stop()
            except Exception as exc:
                errors.append(f"stopping the embedded server failed: {exc}")
        return errors

    def _summary(self, elapsed: float) -> None:
        out = self.printer.line
        out()
        out(f"Stopped after {elapsed:.1f} s ({self.stop_reason}). {self.tally.summary()}.")
        done = [f"slot {self.name} and its publication removed"]
        if self.embedded:
            done.append("PostgreSQL stopped and its files removed")
        else:
            done.append(f"table public.{self.table_name} dropped")
        out(f"Cleaned up: {', '.join(done)}.")

    def _banner(self, version: str, dsn: str, pg: Any, client: Client) -> None:
        out = self.printer.line
        if pg is not None:
            server = f"PostgreSQL {version}, embedded (pid {pg.pid}, data {pg.data_dir})"
        else:
            server = f"PostgreSQL {version}"
        if self.options.duration:
            running = f"for {self.options.duration:g} s (--duration), or until Ctrl-C"
        else:
            running = "until Ctrl-C"
        out()
        out("flash-wal demo: row changes of a PostgreSQL table, delivered to a Python callback")
        out()
        out(f"  server       {server}")
        out(f"  dsn          {mask_dsn(dsn)}")
        out(f"  table        public.{self.table_name}")
        out(f"  slot         {self.name} (temporary)")
        out(f"  publication  {client.driver.config.publication_name}")
        out(f"  running      {running}")
        out()
        out("A second thread writes to the table; each event line is one callback call:")
        out("operation, table, row values as Python objects, transaction id and WAL position.")
        out()

    def _connect(self, dsn: str) -> Any:
        try:
            conn = psycopg2.connect(dsn, connect_timeout=10, application_name="flash_wal_demo")
        except psycopg2.Error as exc:
            raise cannot_connect(dsn, exc) from exc
        conn.autocommit = True
        return conn

    @staticmethod
    def _query_one(conn: Any, query: str) -> Any:
        with conn.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchone()[0]

    def _create_table(self, conn: Any) -> None:
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql.SQL("CREATE TABLE {} (" + TABLE_COLUMNS + ")").format(self.table))
        except psycopg2.Error as exc:
            raise FlashError(
                f"could not create the demo table public.{self.table_name}: {one_line(exc)}"
            ) from exc
