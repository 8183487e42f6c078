"""What the commands of ``flash-wal`` share: the program's name, its exit statuses,
the options several commands take, and a cursor on the server ``--dsn`` names."""

import argparse
import contextlib
import os
from typing import Any, Iterator, NoReturn, Optional

import psycopg2

from ..connection import cannot_connect, connect
from ..drivers.wal_logical import DriverConfig

__all__ = [
    "PROG", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE",
    "DRIVER_DEFAULTS", "Parser", "add_verbose_option", "add_server_options", "server_cursor",
]

PROG = "flash-wal"

EXIT_OK = 0
#: A runtime failure: a FlashError, reported as one line on stderr.
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: The shell's convention for a process stopped by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
#: The shell's convention for a process whose reader went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141

DRIVER_DEFAULTS = DriverConfig()


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, not the whole usage block.

    The sub-parsers of the commands are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_verbose_option(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """-v, accepted before and after the command name."""
    # The sub-parser's copy must not reset a value given before the command, hence SUPPRESS there.
    parser.add_argument(
        "-v", "--verbose", action="count",
        default=0 if top_level else argparse.SUPPRESS,
        help="log what flash_wal does (INFO) on stderr; twice for DEBUG",
    )


def add_server_options(parser: argparse.ArgumentParser, *, slot: Optional[str]) -> None:
    """--dsn and --prefix; and --slot, defaulting to ``slot``, unless that is None."""
    parser.add_argument(
        "--dsn", default=os.environ.get("FLASH_WAL_DSN", ""), metavar="DSN",
        help=("the server, as a libpq connection string or URI (default: "
              "$FLASH_WAL_DSN, else libpq's PGHOST, PGUSER, ... environment variables)"),
    )
    parser.add_argument(
        "--prefix", default=DRIVER_DEFAULTS.publication_slot_prefix, metavar="PREFIX",
        help=f"the DriverConfig's publication_slot_prefix (default: {DRIVER_DEFAULTS.publication_slot_prefix})",
    )
    if slot is not None:
        parser.add_argument(
            "--slot", default=slot, metavar="SLOT",
            help=f"the DriverConfig's replication_slot (default: {slot})",
        )


@contextlib.contextmanager
def server_cursor(dsn: str) -> Iterator[Any]:
    """A cursor on the server of ``--dsn``, closed after; FlashError if it cannot connect."""
    try:
        conn = connect(dsn)
    except psycopg2.OperationalError as exc:
        raise cannot_connect(dsn, exc) from exc
    try:
        yield conn.cursor()
    finally:
        conn.close()
