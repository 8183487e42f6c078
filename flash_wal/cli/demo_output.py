"""What the demo prints: one line per event (:func:`format_event`), printed whole from
any thread (:class:`Printer`), and the count of events for its summary (:class:`Tally`).

The formatting functions are reusable: an event as a short line, values with their
Python types.
"""

import collections
import datetime
import os
import shutil
import threading
from typing import Any, Dict, Iterable, List, Sequence, TextIO

from ..events import DeleteEvent, Event, InsertEvent, TruncateEvent, UpdateEvent, format_lsn
from ..operations import Operation

__all__ = ["format_event", "format_lsn", "format_value", "Printer", "Tally", "DEFAULT_WIDTH"]

#: Longest shown value; longer ones are cut with "...".
MAX_VALUE_CHARS = 40
#: Line width when stdout is not a terminal.
DEFAULT_WIDTH = 200

_OPERATIONS = (Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.TRUNCATE)


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


class Printer:
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


class Tally:
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
