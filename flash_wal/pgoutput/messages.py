"""The pgoutput messages: one small frozen, slotted attrs class per message type.

Only data lives here, as h11 keeps its events apart from its readers: the byte layout
of each message is in :mod:`~flash_wal.pgoutput.readers`, and which type byte stands
for which class in :data:`~flash_wal.pgoutput.parser.MESSAGE_TYPES`.

Column values are not decoded: a text value stays ``bytes`` (the decoding layer hands
it straight to psycopg2's typecasters), a binary value is wrapped in
:class:`BinaryValue`, a NULL is ``None`` and an unchanged TOASTed value is
:data:`~flash_wal.sentinels.UNCHANGED_TOAST`. LSNs, xids and OIDs are unsigned ints,
timestamps timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional, Union

import attr

from ..sentinels import UnchangedToast

__all__ = [
    "Begin",
    "BeginPrepare",
    "BinaryValue",
    "Column",
    "ColumnValue",
    "Commit",
    "CommitPrepared",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "PgOutputMessage",
    "Prepare",
    "Relation",
    "RollbackPrepared",
    "StreamAbort",
    "StreamCommit",
    "StreamPrepare",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "Type",
    "Update",
]


# --------------------------------------------------------------------------- values


@attr.s(frozen=True, slots=True, auto_attribs=True, repr=False)
class BinaryValue:
    """A column value the server sent in binary format (option ``binary``, PG14+).

    Text values are plain ``bytes``; this wrapper lets the decoder tell the two apart.
    """

    data: bytes

    def __repr__(self) -> str:
        return f"BinaryValue({self.data!r})"


#: One column of a tuple: ``None`` (NULL), ``bytes`` (text format, undecoded),
#: :class:`BinaryValue` (binary format) or ``UNCHANGED_TOAST``.
ColumnValue = Union[None, bytes, BinaryValue, UnchangedToast]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Column:
    """One column of a :class:`Relation`."""

    name: str
    type_oid: int
    #: ``atttypmod``; -1 when the type has no modifier.
    type_modifier: int
    #: Part of the replica identity (every column is under REPLICA IDENTITY FULL).
    is_key: bool


# ------------------------------------------------------------------------- messages


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Begin:
    """``B``: a transaction starts. ``final_lsn`` is the LSN of its commit record."""

    final_lsn: int
    commit_time: datetime
    xid: int


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Commit:
    """``C``: a transaction ends. Acknowledging ``end_lsn`` confirms all of it."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Origin:
    """``O``: the replication origin the transaction came from."""

    origin_lsn: int
    name: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Relation:
    """``R``: describes a table before the first change that uses it.

    ``namespace`` is kept as sent: the server sends ``""`` for ``pg_catalog``.
    ``replica_identity`` is one of ``"d"`` (default), ``"n"`` (nothing), ``"f"`` (full),
    ``"i"`` (index).
    """

    xid: Optional[int]
    relid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Type:
    """``Y``: names a non-built-in type (OID >= 10000) before its first use.

    A domain is announced with its base type's namespace and name. ``namespace`` is
    ``""`` for ``pg_catalog``, as for :class:`Relation`.
    """

    xid: Optional[int]
    type_oid: int
    namespace: str
    name: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Insert:
    """``I``: a new row."""

    xid: Optional[int]
    relid: int
    new: tuple[ColumnValue, ...]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Update:
    """``U``: a changed row.

    ``old`` is ``None`` when the server sent no old tuple (REPLICA IDENTITY DEFAULT or
    INDEX and the key did not change). ``old_is_key`` is True when the old tuple holds
    only the key columns (``K``; the other columns are ``None``), False for a full old row
    (``O``) or no old tuple.
    """

    xid: Optional[int]
    relid: int
    old: Optional[tuple[ColumnValue, ...]]
    old_is_key: bool
    new: tuple[ColumnValue, ...]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Delete:
    """``D``: a deleted row; ``old_is_key`` as for :class:`Update`."""

    xid: Optional[int]
    relid: int
    old: tuple[ColumnValue, ...]
    old_is_key: bool


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Truncate:
    """``T``: TRUNCATE of one or more tables."""

    xid: Optional[int]
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Message:
    """``M``: a ``pg_logical_emit_message()`` record (option ``messages``)."""

    xid: Optional[int]
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamStart:
    """``S``: a block of a large in-progress transaction follows (protocol 2+)."""

    xid: int
    first_segment: bool


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamStop:
    """``E``: the end of a streamed block."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamCommit:
    """``c``: a streamed transaction committed."""

    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamAbort:
    """``A``: a streamed (sub)transaction aborted; ``subxid == xid`` for the top level.

    ``abort_lsn`` and ``abort_time`` are sent only with ``streaming 'parallel'``
    (protocol 4) and are ``None`` otherwise.
    """

    xid: int
    subxid: int
    abort_lsn: Optional[int] = None
    abort_time: Optional[datetime] = None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class BeginPrepare:
    """``b``: a two-phase transaction starts (protocol 3+, option ``two_phase``)."""

    prepare_lsn: int
    end_lsn: int
    prepare_time: datetime
    xid: int
    gid: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Prepare:
    """``P``: PREPARE TRANSACTION of the transaction opened by :class:`BeginPrepare`."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: datetime
    xid: int
    gid: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CommitPrepared:
    """``K``: COMMIT PREPARED."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime
    xid: int
    gid: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RollbackPrepared:
    """``r``: ROLLBACK PREPARED."""

    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_time: datetime
    rollback_time: datetime
    xid: int
    gid: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamPrepare:
    """``p``: PREPARE TRANSACTION of a streamed transaction."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: datetime
    xid: int
    gid: str


PgOutputMessage = Union[
    Begin,
    Commit,
    Origin,
    Relation,
    Type,
    Insert,
    Update,
    Delete,
    Truncate,
    Message,
    StreamStart,
    StreamStop,
    StreamCommit,
    StreamAbort,
    BeginPrepare,
    Prepare,
    CommitPrepared,
    RollbackPrepared,
    StreamPrepare,
]
