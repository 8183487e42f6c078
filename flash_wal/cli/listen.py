"""``flash-wal listen``: the changes of tables as JSON lines on standard output."""

import argparse
import csv
import os
import re
import select
import signal
import sys
import threading
from typing import Dict, List, Optional

from ..client import Client, ClientConfig
from ..drivers.wal_logical import Driver, DriverConfig
from ..errors import ConfigurationError, FlashError
from ..event_json import event_to_json
from ..events import Event
from ..foreground import run_until_stopped
from ..listener import Condition, Listener, ListenerConfig
from ..operations import Operation
from ..table_name import TableName, parse_table_name
from .progress import BackfillProgress
from .options import (
    EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_OK, PROG, Parser, add_server_options, add_verbose_option,
)

__all__ = ["cmd_listen", "add_listen_parser", "add_table_options", "table_selection", "listen_conditions", "parse_where", "JsonLines", "LISTEN_SLOT", "LISTEN_SHUTDOWN_TIMEOUT"]

#: Seconds close() gives callbacks still writing lines when ``listen`` stops. A line
#: takes microseconds to write; events held back (see JsonLines) keep the exit
#: waiting this long, and with --durable whatever was not written is delivered again.
LISTEN_SHUTDOWN_TIMEOUT = 2.0
#: The replication slot ``listen`` uses unless told otherwise: not the library's
#: default, which an application's durable slot may have (and a temporary client
#: drops an idle slot of its name as its own leftover).
LISTEN_SLOT = "flash_listen"
#: How often the main thread of ``listen`` looks whether the reader of the output went away.
_POLL_SECONDS = 0.1
#: A connection string that leaves every parameter to libpq's PGHOST, PGUSER, ...
#: variables (ClientConfig wants a non-empty one).
_FROM_ENVIRONMENT = "application_name=flash_wal"


class JsonLines:
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

    def check_reader(self) -> Optional[str]:
        """Notice a reader that went away (``| head``) before the next line fails;
        returns :attr:`stopped`."""
        # A pipe whose reading end is closed polls as an error; a file or terminal does not.
        if self._poll.poll(0) and self.stopped is None:
            with self._lock:
                if self.stopped is None:
                    self.stopped = "broken-pipe"
        return self.stopped

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
    tables = table_selection(args)
    conditions = listen_conditions(args)
    output = JsonLines(sys.stdout.fileno(), args.max_events, hold_back=args.durable)
    client = Client(ClientConfig(
        database_cnx=args.dsn or _FROM_ENVIRONMENT,
        driver=Driver(DriverConfig(
            publication_slot_prefix=args.prefix, replication_slot=args.slot, durable=args.durable,
        )),
        shutdown_timeout=LISTEN_SHUTDOWN_TIMEOUT,
    ))
    for table, text in tables.items():
        listener = Listener(ListenerConfig(table=text, fields=args.fields, conditions=conditions,
                                           backfill=args.backfill))
        listener.on(args.ops | Operation.READ if args.backfill else args.ops, output)
        client.attach(listener)
    progress = BackfillProgress(client.stats, sys.stderr) if args.backfill and sys.stderr.isatty() else None
    if progress is not None:
        progress.start()  # draws once the backfills have begun
    try:
        stopped = run_until_stopped(
            client, stop_when=output.check_reader, check_every=_POLL_SECONDS,
            note=f"{PROG}: stopping, please wait while the client closes\n",
        )
    finally:
        if progress is not None:
            progress.stop()
        output.release()  # after close: what was held back is then not acknowledged
    if stopped is None:
        raise FlashError("the replication stream ended unexpectedly")
    if stopped == signal.SIGINT:
        return EXIT_INTERRUPTED
    if output.stopped == "broken-pipe":
        return EXIT_BROKEN_PIPE
    if output.error is not None:
        raise FlashError(f"cannot write to standard output: {output.error}")
    return EXIT_OK  # SIGTERM or --max-events


def listen_conditions(args: argparse.Namespace) -> List[Condition]:
    """The Conditions of --where, --where-null and --where-not-null.

    Their values stay texts: the driver has the server read each as a value of its
    column's type when the client starts, so that ``published=true`` means True for a
    boolean and ``'true'`` for a text column.
    """
    return (
        list(args.where)
        + [Condition(column, None) for column in args.where_null]
        + [Condition(column, None, op="neq") for column in args.where_not_null]
    )


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


#: --where's operators, the longest first so that ``<=`` is not read as ``<``.
WHERE_OPERATORS = {"<=": "lte", ">=": "gte", "!=": "neq", "<>": "neq", "=": "eq", "<": "lt", ">": "gt"}
_COMPARISON = re.compile(r"\s*(?P<column>[^=!<>]*?)\s*(?P<op><=|>=|!=|<>|=|<|>)(?P<value>.*)", re.DOTALL)
_MEMBERSHIP = re.compile(r"\s*(?P<column>[^=!<>\s]+)\s+(?P<op>not\s+in|in)\s*\((?P<values>.*)\)\s*", re.IGNORECASE | re.DOTALL)
_WHERE_USAGE = "COLUMN=VALUE (or !=, <>, <, <=, >, >=; or 'COLUMN in (A,B)', 'COLUMN not in (A,B)')"


def parse_where(text: str) -> Condition:
    """``COLUMN<op>VALUE`` or ``COLUMN [not] in (A,B,...)``, as a Condition whose
    values are texts (see :func:`listen_conditions`). Spaces around the column, the
    operator and each value are dropped; a value holding a comma is quoted as in CSV:
    ``tag in ("a,b", c)``."""
    membership = _MEMBERSHIP.fullmatch(text)
    if membership is not None:
        values = [value.strip() for value in next(csv.reader([membership["values"]], skipinitialspace=True), [])]
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} lists no value between its parentheses")
        op = "in" if membership["op"].lower() == "in" else "not_in"
        return Condition(membership["column"], values, op=op)
    comparison = _COMPARISON.fullmatch(text)
    if comparison is None or not comparison["column"]:
        raise argparse.ArgumentTypeError(
            f"expected {_WHERE_USAGE}, got {text!r} (for IS NULL, use --where-null COLUMN)"
        )
    return Condition(comparison["column"], comparison["value"].strip(), op=WHERE_OPERATORS[comparison["op"]])


def _count_argument(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def add_table_options(parser: argparse.ArgumentParser, *, verb: str) -> None:
    """--table, --ops, --fields, --where, --where-null and --where-not-null, as ``listen``
    and ``pipe`` take them (``verb``: what the command does with an event, in the help);
    :func:`table_selection` reads them."""
    verbs = verb + ("es" if verb.endswith(("sh", "s")) else "s")
    parser.add_argument(
        "-t", "--table", action="append", required=True, type=_table_argument, metavar="TABLE",
        help=f"a table to {verb} the changes of: posts, stats.visits, '\"My Schema\".\"My Table\"'; repeat for several",
    )
    parser.add_argument(
        "--ops", type=_operations_argument, default=Operation.ALL, metavar="OPS",
        help=f"the operations to {verb}, separated by commas: insert, update, delete, truncate (default: all)",
    )
    parser.add_argument(
        "--fields", action="extend", type=_columns_argument, default=[], metavar="COLUMNS",
        help=(f"{verb} only these columns, separated by commas (default: all); an update that "
              f"changes none of them {verbs} nothing"),
    )
    parser.add_argument(
        "--where", action="append", type=parse_where, default=[], metavar="CONDITION",
        help=(f"{verb} only rows for which CONDITION holds: COLUMN=VALUE, COLUMN!=VALUE (or <>), "
              "COLUMN<VALUE, <=, >, >=, 'COLUMN in (A,B)', 'COLUMN not in (A,B)'; values are "
              "read as the column's type: published=true, 'price>=9.5', day=2025-01-31, "
              "meta={\"a\":1} for json; repeat for several, all must hold; an update that "
              f"makes a row match {verbs} as an INSERT, one that makes it stop matching as a DELETE"),
    )
    parser.add_argument(
        "--where-null", action="append", default=[], metavar="COLUMN",
        help=f"{verb} only rows whose COLUMN IS NULL; repeatable",
    )
    parser.add_argument(
        "--where-not-null", action="append", default=[], metavar="COLUMN",
        help=f"{verb} only rows whose COLUMN IS NOT NULL; repeatable",
    )


def table_selection(args: argparse.Namespace) -> Dict[TableName, str]:
    """The tables of --table, each once, with the text given for it."""
    tables: Dict[TableName, str] = {}
    for text in args.table:
        tables.setdefault(parse_table_name(text), text)
    return tables


def add_listen_parser(commands: "argparse._SubParsersAction[Parser]") -> None:
    parser = commands.add_parser(
        "listen",
        help="print the changes of tables as JSON lines",
        description=(
            "Print every committed change of the tables as one JSON object per line on "
            "standard output (table, op, lsn, commit_lsn, xid, commit_time, and new/old "
            "rows or the TRUNCATE flags), until Ctrl-C or SIGTERM, or --max-events. "
            "--fields and the --where options apply to every --table. Lines of one "
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
    add_table_options(parser, verb="print")
    parser.add_argument(
        "-n", "--max-events", type=_count_argument, default=None, metavar="N",
        help="exit, with status 0, after printing N events",
    )
    add_server_options(parser, slot=LISTEN_SLOT)
    parser.add_argument(
        "--durable", action="store_true",
        help=("keep the replication slot and publication when stopping, and resume after "
              "the last event printed by the previous run with the same --prefix and --slot "
              "(at least once: events of a transaction not wholly printed come again); "
              "'flash-wal cleanup' drops them"),
    )
    parser.add_argument(
        "--backfill", action="store_true",
        help=("print the rows already in the tables first, as \"op\": \"READ\" lines merged "
              "consistently with the changes (a progress bar on standard error when it is a "
              "terminal); with --durable a completed backfill is not repeated"),
    )
    add_verbose_option(parser, top_level=False)
    parser.set_defaults(command=cmd_listen)
