"""The typed events delivered to callbacks.

Events are frozen, slotted attrs classes: cheap to build on the hot path and safe to
hand to several threads. ``operation`` is a class constant, not a field, so every
event of a kind shares it.
"""

import datetime
import inspect
import types
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

import attr

from .operations import Operation
from .sentinels import UNCHANGED_TOAST

__all__ = [
    "Event",
    "InsertEvent",
    "UpdateEvent",
    "DeleteEvent",
    "TruncateEvent",
    "ReadEvent",
    "MessageEvent",
    "UNCHANGED_TOAST",
    "format_lsn",
]

Row = Dict[str, Any]
Key = Optional[Tuple[Any, ...]]
CommitTime = Optional[datetime.datetime]


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
    #: The listener's ``primary_key`` values, in its order, from ``new``; None without a key.
    key: Key = attr.ib(default=None, kw_only=True)


@attr.s(frozen=True, slots=True)
class UpdateEvent(Event):
    """A row was updated. ``old`` is None when the server sent no old row."""

    operation: ClassVar[Operation] = Operation.UPDATE
    old: Optional[Row] = attr.ib()
    new: Row = attr.ib()
    #: The listener's ``primary_key`` values from ``new`` (an UPDATE that changes them
    #: arrives as a DeleteEvent and an InsertEvent instead); None without a key.
    key: Key = attr.ib(default=None, kw_only=True)


@attr.s(frozen=True, slots=True)
class DeleteEvent(Event):
    """A row was deleted (or, with conditions, an update made it stop matching)."""

    operation: ClassVar[Operation] = Operation.DELETE
    old: Row = attr.ib()
    #: The listener's ``primary_key`` values from ``old``; None without a key.
    key: Key = attr.ib(default=None, kw_only=True)


@attr.s(frozen=True, slots=True)
class ReadEvent(Event):
    """A row as a backfill read it (``Client.backfill``). ``lsn`` and ``commit_lsn``
    are where its chunk was merged into the stream (the chunk's high watermark);
    ``xid`` and ``commit_time`` are None."""

    operation: ClassVar[Operation] = Operation.READ
    new: Row = attr.ib()
    #: The listener's ``primary_key`` values, in its order, from ``new``.
    key: Key = attr.ib(default=None, kw_only=True)


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


# The replication thread builds an event for every change, and attrs' frozen __init__
# sets each field through object.__setattr__, looked up anew on every call. The
# builders below set the slots through their descriptors instead: the same object at
# about half the cost (docs/performance.rst has the figures). Each has a plain twin
# that calls the attrs constructor, with the same signature; tests/unit/test_hot_path.py
# checks that both make equal events of the same type for any input.


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """What sets field ``name`` of a ``cls`` fastest: the descriptor of its slot (attrs
    names a slotted class's slots after its fields), or object.__setattr__, as attrs'
    own __init__ does, should a future attrs keep a field elsewhere."""
    descriptor = inspect.getattr_static(cls, name)
    if isinstance(descriptor, types.MemberDescriptorType):
        return descriptor.__set__

    def set_field(event: Any, value: Any) -> None:
        object.__setattr__(event, name, value)

    return set_field


_new = object.__new__
_set_table = _slot_setter(Event, "table")
_set_lsn = _slot_setter(Event, "lsn")
_set_commit_lsn = _slot_setter(Event, "commit_lsn")
_set_xid = _slot_setter(Event, "xid")
_set_commit_time = _slot_setter(Event, "commit_time")
_set_insert_new = _slot_setter(InsertEvent, "new")
_set_update_old = _slot_setter(UpdateEvent, "old")
_set_update_new = _slot_setter(UpdateEvent, "new")
_set_delete_old = _slot_setter(DeleteEvent, "old")
_set_insert_key = _slot_setter(InsertEvent, "key")
_set_update_key = _slot_setter(UpdateEvent, "key")
_set_delete_key = _slot_setter(DeleteEvent, "key")


def build_insert(
    table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: CommitTime, new: Row,
    key: Key = None,
) -> InsertEvent:
    event = _new(InsertEvent)
    _set_table(event, table)
    _set_lsn(event, lsn)
    _set_commit_lsn(event, commit_lsn)
    _set_xid(event, xid)
    _set_commit_time(event, commit_time)
    _set_insert_new(event, new)
    _set_insert_key(event, key)
    return event


def build_insert_plain(
    table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: CommitTime, new: Row,
    key: Key = None,
) -> InsertEvent:
    return InsertEvent(new, key=key, table=table, lsn=lsn, commit_lsn=commit_lsn, xid=xid, commit_time=commit_time)


def build_update(
    table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: CommitTime, old: Optional[Row], new: Row,
    key: Key = None,
) -> UpdateEvent:
    event = _new(UpdateEvent)
    _set_table(event, table)
    _set_lsn(event, lsn)
    _set_commit_lsn(event, commit_lsn)
    _set_xid(event, xid)
    _set_commit_time(event, commit_time)
    _set_update_old(event, old)
    _set_update_new(event, new)
    _set_update_key(event, key)
    return event


def build_update_plain(
    table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: CommitTime, old: Optional[Row], new: Row,
    key: Key = None,
) -> UpdateEvent:
    return UpdateEvent(old, new, key=key, table=table, lsn=lsn, commit_lsn=commit_lsn, xid=xid, commit_time=commit_time)


def build_delete(
    table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: CommitTime, old: Row,
    key: Key = None,
) -> DeleteEvent:
    event = _new(DeleteEvent)
    _set_table(event, table)
    _set_lsn(event, lsn)
    _set_commit_lsn(event, commit_lsn)
    _set_xid(event, xid)
    _set_commit_time(event, commit_time)
    _set_delete_old(event, old)
    _set_delete_key(event, key)
    return event


def build_delete_plain(
    table: str, lsn: int, commit_lsn: int, xid: Optional[int], commit_time: CommitTime, old: Row,
    key: Key = None,
) -> DeleteEvent:
    return DeleteEvent(old, key=key, table=table, lsn=lsn, commit_lsn=commit_lsn, xid=xid, commit_time=commit_time)
