"""The typed events delivered to callbacks.

Events are frozen, slotted attrs classes: cheap to build on the hot path and safe to
hand to several threads. ``operation`` is a class constant, not a field, so every
event of a kind shares it.
"""

import datetime
from typing import Any, ClassVar, Dict, Optional

import attr

from .operations import Operation
from .sentinels import UNCHANGED_TOAST

__all__ = [
    "Event",
    "InsertEvent",
    "UpdateEvent",
    "DeleteEvent",
    "TruncateEvent",
    "MessageEvent",
    "UNCHANGED_TOAST",
    "format_lsn",
]

Row = Dict[str, Any]


def format_lsn(lsn: Optional[int]) -> str:
    """A WAL position the way PostgreSQL shows it: ``0/16E4A30``."""
    if lsn is None:
        return "?"
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@attr.s(frozen=True, slots=True, kw_only=True)
class Event:
    """What every row event carries.

    ``lsn`` is the change's own WAL position; ``commit_lsn`` is the position of its
    transaction's commit record (the same for every event of a transaction, never
    decreasing in delivery order); ``commit_time`` is timezone-aware (UTC).
    """

    operation: ClassVar[Operation]

    table: str = attr.ib()
    lsn: int = attr.ib(default=0)
    commit_lsn: int = attr.ib(default=0)
    xid: Optional[int] = attr.ib(default=None)
    commit_time: Optional[datetime.datetime] = attr.ib(default=None)


@attr.s(frozen=True, slots=True)
class InsertEvent(Event):
    """A row was inserted (or, with conditions, an update made it match)."""

    operation: ClassVar[Operation] = Operation.INSERT
    new: Row = attr.ib()


@attr.s(frozen=True, slots=True)
class UpdateEvent(Event):
    """A row was updated. ``old`` is None when the server sent no old row."""

    operation: ClassVar[Operation] = Operation.UPDATE
    old: Optional[Row] = attr.ib()
    new: Row = attr.ib()


@attr.s(frozen=True, slots=True)
class DeleteEvent(Event):
    """A row was deleted (or, with conditions, an update made it stop matching)."""

    operation: ClassVar[Operation] = Operation.DELETE
    old: Row = attr.ib()


@attr.s(frozen=True, slots=True)
class TruncateEvent(Event):
    """The table was truncated."""

    operation: ClassVar[Operation] = Operation.TRUNCATE
    cascade: bool = attr.ib(default=False)
    restart_identity: bool = attr.ib(default=False)


@attr.s(frozen=True, slots=True, kw_only=True)
class MessageEvent:
    """A logical decoding message sent with ``pg_logical_emit_message``."""

    prefix: str = attr.ib()
    content: bytes = attr.ib()
    transactional: bool = attr.ib()
    lsn: int = attr.ib(default=0)
    xid: Optional[int] = attr.ib(default=None)


# attrs' frozen __init__ sets every field through object.__setattr__, looked up anew on
# each call. The replication thread builds an event for every change, so it uses these
# builders, which set the slots through their descriptors: the same object (the tests
# compare them with the attrs constructors) at about half the cost.
_new = object.__new__
_set_table = Event.table.__set__  # type: ignore[attr-defined]
_set_lsn = Event.lsn.__set__  # type: ignore[attr-defined]
_set_commit_lsn = Event.commit_lsn.__set__  # type: ignore[attr-defined]
_set_xid = Event.xid.__set__  # type: ignore[attr-defined]
_set_commit_time = Event.commit_time.__set__  # type: ignore[attr-defined]
_set_insert_new = InsertEvent.new.__set__  # type: ignore[attr-defined]
_set_update_old = UpdateEvent.old.__set__  # type: ignore[attr-defined]
_set_update_new = UpdateEvent.new.__set__  # type: ignore[attr-defined]
_set_delete_old = DeleteEvent.old.__set__  # type: ignore[attr-defined]


def build_insert(table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: Any, new: Row) -> InsertEvent:
    event = _new(InsertEvent)
    _set_table(event, table)
    _set_lsn(event, lsn)
    _set_commit_lsn(event, commit_lsn)
    _set_xid(event, xid)
    _set_commit_time(event, commit_time)
    _set_insert_new(event, new)
    return event


def build_update(
    table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: Any, old: Optional[Row], new: Row
) -> UpdateEvent:
    event = _new(UpdateEvent)
    _set_table(event, table)
    _set_lsn(event, lsn)
    _set_commit_lsn(event, commit_lsn)
    _set_xid(event, xid)
    _set_commit_time(event, commit_time)
    _set_update_old(event, old)
    _set_update_new(event, new)
    return event


def build_delete(table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: Any, old: Row) -> DeleteEvent:
    event = _new(DeleteEvent)
    _set_table(event, table)
    _set_lsn(event, lsn)
    _set_commit_lsn(event, commit_lsn)
    _set_xid(event, xid)
    _set_commit_time(event, commit_time)
    _set_delete_old(event, old)
    return event
