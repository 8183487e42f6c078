"""The ``flash-wal`` command line: ``flash-wal <command> [options]``.

One parser with a sub-parser per command; each command is a function taking the
parsed arguments and returning an exit status, in the module named after it:
:mod:`.listen`, :mod:`.pipe`, :mod:`.admin` (``status`` and ``cleanup``), :mod:`.demo`. Exit
statuses: 0 success, 1 a runtime failure (a :class:`~flash_wal.errors.FlashError`,
reported as one line on stderr, not a traceback), 2 a usage error (one line too), 130
interrupted (SIGINT), 141 the reader of ``listen``'s output went away.
"""

import argparse
import sys
from typing import Callable, List, Optional

from .. import __version__
from ..connection import mask_secrets
from ..errors import FlashError
from ..foreground import stderr_logging
from .admin import add_cleanup_parser, add_status_parser
from .demo import add_demo_parser
from .listen import add_listen_parser
from .pipe import add_pipe_parser
from .options import (
    EXIT_BROKEN_PIPE, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, Parser, add_verbose_option,
)

__all__ = [
    "main", "build_parser",
    "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE",
]

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="flash_wal: stream PostgreSQL row changes to Python callbacks.",
        epilog=f"Run '{PROG} <command> --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_verbose_option(parser, top_level=True)
    commands = parser.add_subparsers(title="commands", metavar="<command>")
    add_demo_parser(commands)
    add_status_parser(commands)
    add_cleanup_parser(commands)
    add_listen_parser(commands)
    add_pipe_parser(commands)
    return parser


def _report_error(exc: FlashError, verbose: bool, dsn: Optional[str]) -> None:
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
    with stderr_logging(args.verbose):
        try:
            return command(args)
        except FlashError as exc:
            _report_error(exc, verbose=args.verbose > 0, dsn=getattr(args, "dsn", None))
            return EXIT_FAILURE
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
