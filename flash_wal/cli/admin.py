"""``flash-wal status`` and ``flash-wal cleanup``: the server objects of a prefix,
shown and dropped."""

import argparse
import json
import sys
from typing import Optional

import attr

from ..drivers.wal_logical import Driver, DriverConfig
from ..drivers.wal_logical.ownership import SlotReport, check_slot_is_droppable, prefix_report, slot_report
from ..errors import FlashError
from .options import (
    DRIVER_DEFAULTS, EXIT_FAILURE, EXIT_OK, Parser, add_server_options, add_verbose_option, server_cursor,
)

__all__ = ["cmd_status", "cmd_cleanup", "add_status_parser", "add_cleanup_parser"]


def _format_bytes(count: Optional[int]) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _slot_kind(report: SlotReport) -> str:
    if not report.exists:
        return "-"
    return "temporary" if report.temporary else "durable"


def _slot_state(report: SlotReport) -> str:
    if not report.exists:
        return "no slot"
    if report.wal_status == "lost":
        return "invalidated"
    if report.active_pid is not None:
        return f"active (pid {report.active_pid})"
    return "inactive"


def _publication_cell(report: SlotReport) -> str:
    if not report.publications:
        return "-"
    names = ", ".join(report.publications)
    return f"{names} (old name)" if report.legacy_publication else names


def cmd_status(args: argparse.Namespace) -> int:
    """``flash-wal status``: the slots and publications of a prefix."""
    with server_cursor(args.dsn) as cursor:
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


def add_status_parser(commands: "argparse._SubParsersAction[Parser]") -> None:
    parser = commands.add_parser(
        "status",
        help="show the replication slots and publications of a prefix",
        description=(
            "List every replication slot whose publications <prefix>-<slot>-<operation> (or "
            "<prefix>-<slot>, as earlier versions named their one publication) exist: durable "
            "or temporary, active (with the walsender's pid) or not, how many bytes of WAL "
            "it is behind the server, and the tables its publications hold. A publication "
            "named <prefix>_<slot> by flash_wal 0.1.0 is listed, as '(old name)', when its "
            "slot exists and no other slot's name could have made it."
        ),
    )
    add_server_options(parser, slot=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_verbose_option(parser, top_level=False)
    parser.set_defaults(command=cmd_status)


def cmd_cleanup(args: argparse.Namespace) -> int:
    """``flash-wal cleanup``: drop the slot and publication a configuration left behind."""
    config = DriverConfig(publication_slot_prefix=args.prefix, replication_slot=args.slot)
    with server_cursor(args.dsn) as cursor:
        check_slot_is_droppable(cursor, args.slot)  # before asking whether to drop it
        report = slot_report(cursor, args.prefix, args.slot)
    if not report.exists and not report.publications:
        print(f"nothing to clean up: no slot {args.slot!r} and no publication {config.publication_name}-<operation>")
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
    names = ", ".join(repr(name) for name in report.publications)
    dropped += [f"publication{'s' if len(report.publications) > 1 else ''} {names}"] if names else []
    print(f"dropped {' and '.join(dropped)}")
    return EXIT_OK


def add_cleanup_parser(commands: "argparse._SubParsersAction[Parser]") -> None:
    parser = commands.add_parser(
        "cleanup",
        help="drop the replication slot and publication of a prefix and slot",
        description=(
            "Drop the replication slot SLOT and the publications <prefix>-<slot>-<operation> "
            "and <prefix>-<slot>, as left "
            "behind by a durable client or a killed one (and the publication <prefix>_<slot> "
            "of flash_wal 0.1.0, unless another slot's name could have made it). A slot in "
            "use is never dropped, nor one flash_wal does not make (another plugin, database "
            "or kind), nor a publication flash_wal did not make for PREFIX and SLOT; a durable "
            "slot only after a yes (or with --yes), since what it kept is lost."
        ),
    )
    add_server_options(parser, slot=DRIVER_DEFAULTS.replication_slot)
    parser.add_argument("-y", "--yes", action="store_true", help="drop a durable slot without asking")
    add_verbose_option(parser, top_level=False)
    parser.set_defaults(command=cmd_cleanup)
