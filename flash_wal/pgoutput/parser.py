"""The pgoutput parser: the one table of message types, and where a session stands.

Bytes in, message objects out, in the manner of h11: this module never touches a
socket or a driver. Whoever reads the replication stream hands each XLogData payload
(``ReplicationMessage.payload`` in psycopg2) to :meth:`PgOutputParser.parse` and gets
back one immutable message from :mod:`~flash_wal.pgoutput.messages`.

:data:`MESSAGE_TYPES` is the one place that says which type byte stands for which
message, which reader reads it, from which protocol version on, and where it may come;
the parser builds its dispatch tables from it, and the tests' encoder takes its type
bytes from it.

The only state is "inside a streamed block or not" (between Stream Start and Stream
Stop, protocol 2+). Inside a block the change messages (Relation, Type, Insert, Update,
Delete, Truncate, Message) start with an extra Int32 xid. Rather than test a flag on
every message, the parser swaps between two 256-entry dispatch tables, so dispatch is
one index and one call; the tables also encode which messages are legal where and for
the configured protocol version, so a stream that got out of step is reported instead
of silently misread.

Every malformed frame (truncated, trailing bytes, unknown byte codes, impossible counts,
lengths running past the end, invalid UTF-8, out-of-range timestamps) raises
:class:`~flash_wal.errors.ProtocolError` naming the message type and the byte offset
(counted from the start of the payload, type byte = offset 0), chained to the
low-level exception where there is one. Nothing else escapes ``parse`` for any input
``bytes``.
"""

from __future__ import annotations

import enum
from typing import Callable, NoReturn, Optional

import attr

from ..errors import ConfigurationError, ProtocolError
from .fields import Malformed, byte_repr
from .messages import (
    Begin,
    BeginPrepare,
    Commit,
    CommitPrepared,
    Delete,
    Insert,
    Message,
    Origin,
    PgOutputMessage,
    Prepare,
    Relation,
    RollbackPrepared,
    StreamAbort,
    StreamCommit,
    StreamPrepare,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
)
from .readers import (
    read_begin,
    read_begin_prepare,
    read_commit,
    read_commit_prepared,
    read_delete,
    read_insert,
    read_message,
    read_origin,
    read_prepare,
    read_relation,
    read_rollback_prepared,
    read_stream_abort,
    read_stream_abort_parallel,
    read_stream_commit,
    read_stream_prepare,
    read_stream_start,
    read_stream_stop,
    read_truncate,
    read_type,
    read_update,
    read_xid,
)

__all__ = ["InBlock", "MESSAGE_TYPES", "MessageType", "PgOutputParser", "STREAMING_VERSION"]

Reader = Callable[[bytes], PgOutputMessage]
#: A change message's reader: the payload, the offset its fields start at, its xid.
ChangeReader = Callable[[bytes, int, Optional[int]], PgOutputMessage]

#: The first protocol version that streams in-progress transactions.
STREAMING_VERSION = 2


class InBlock(enum.Enum):
    """Whether, and how, a message type is sent inside a streamed block."""

    NEVER = "only outside a streamed block"
    AS_OUTSIDE = "inside a streamed block too, laid out as outside"
    AFTER_XID = "inside a streamed block too, after its transaction's xid"
    ONLY = "only inside a streamed block"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class MessageType:
    """One pgoutput message type, as PostgreSQL's "Logical Replication Message Formats"
    describes it."""

    code: bytes
    message: type
    #: Takes the payload; a change reader (``in_block=AFTER_XID``) also takes the offset
    #: its fields start at and the xid.
    read: Callable[..., PgOutputMessage]
    since_version: int = 1
    in_block: InBlock = InBlock.NEVER
    #: Stream Start opens a block, Stream Stop closes it.
    switches_block: bool = False
    #: The reader under ``streaming 'parallel'`` (protocol 4), where the layout differs.
    read_parallel: Optional[Reader] = None


MESSAGE_TYPES: tuple[MessageType, ...] = (
    MessageType(b"B", Begin, read_begin),
    MessageType(b"C", Commit, read_commit),
    # pgoutput sends Origin right after Stream Start, without an xid.
    MessageType(b"O", Origin, read_origin, in_block=InBlock.AS_OUTSIDE),
    MessageType(b"R", Relation, read_relation, in_block=InBlock.AFTER_XID),
    MessageType(b"Y", Type, read_type, in_block=InBlock.AFTER_XID),
    MessageType(b"I", Insert, read_insert, in_block=InBlock.AFTER_XID),
    MessageType(b"U", Update, read_update, in_block=InBlock.AFTER_XID),
    MessageType(b"D", Delete, read_delete, in_block=InBlock.AFTER_XID),
    MessageType(b"T", Truncate, read_truncate, in_block=InBlock.AFTER_XID),
    MessageType(b"M", Message, read_message, in_block=InBlock.AFTER_XID),
    MessageType(b"S", StreamStart, read_stream_start, STREAMING_VERSION, switches_block=True),
    MessageType(
        b"E", StreamStop, read_stream_stop, STREAMING_VERSION, InBlock.ONLY, switches_block=True
    ),
    MessageType(b"c", StreamCommit, read_stream_commit, STREAMING_VERSION),
    MessageType(
        b"A",
        StreamAbort,
        read_stream_abort,
        STREAMING_VERSION,
        read_parallel=read_stream_abort_parallel,
    ),
    MessageType(b"b", BeginPrepare, read_begin_prepare, 3),
    MessageType(b"P", Prepare, read_prepare, 3),
    MessageType(b"K", CommitPrepared, read_commit_prepared, 3),
    MessageType(b"r", RollbackPrepared, read_rollback_prepared, 3),
    MessageType(b"p", StreamPrepare, read_stream_prepare, 3),
)

_NAMES: dict[int, str] = {kind.code[0]: kind.message.__name__ for kind in MESSAGE_TYPES}


class PgOutputParser:
    """Turns pgoutput payloads into message objects, one payload per :meth:`parse`.

    ``protocol_version`` is the ``proto_version`` option given to START_REPLICATION;
    messages the server cannot send at that version are rejected. ``parallel_streaming``
    must match ``streaming 'parallel'`` (protocol 4+), which adds two fields to Stream
    Abort.

    The parser remembers whether it is inside a streamed block. Use a new parser (or
    :meth:`reset`) for a new replication connection: a connection lost mid-block would
    otherwise leave it expecting the block's xid fields.
    """

    __slots__ = ("protocol_version", "parallel_streaming", "_table", "_outside", "_inside")

    def __init__(self, protocol_version: int = 1, parallel_streaming: bool = False) -> None:
        if type(protocol_version) is not int or protocol_version < 1:
            raise ConfigurationError(
                f"protocol_version must be an integer >= 1, not {protocol_version!r}"
            )
        if parallel_streaming and protocol_version < 4:
            raise ConfigurationError(
                f"parallel_streaming needs protocol_version 4 or later (got {protocol_version})"
            )
        self.protocol_version = protocol_version
        self.parallel_streaming = parallel_streaming
        self._outside, self._inside = self._build_tables()
        self._table = self._outside

    @property
    def in_stream(self) -> bool:
        """True between a Stream Start and its Stream Stop."""
        return self._table is self._inside

    def reset(self) -> None:
        """Forget any streamed block in progress (for a new connection)."""
        self._table = self._outside

    def parse(self, payload: bytes) -> PgOutputMessage:
        """Parse one complete pgoutput message.

        ``payload`` must be ``bytes`` (text values are slices of it). Raises
        :class:`ProtocolError` for any malformed or out-of-place message.
        """
        # Called once per message, so the table lookup is written out here rather
        # than shared with parse_held through a helper.
        if not payload:
            raise ProtocolError("empty pgoutput payload")
        try:
            return self._table[payload[0]](payload)
        except Malformed as exc:
            raise _invalid(payload, exc) from exc.__cause__

    def parse_held(self, payload: bytes) -> PgOutputMessage:
        """Parse a message that was received inside a streamed block and held for
        later, whatever the parser's state now (which it leaves alone)."""
        if payload[:1] == b"E" and self.protocol_version >= STREAMING_VERSION:
            # Reading it would change the state.
            raise ProtocolError("invalid Stream Stop message at byte 0: a Stream Stop is never held")
        if not payload:
            raise ProtocolError("empty pgoutput payload")
        try:
            return self._inside[payload[0]](payload)
        except Malformed as exc:
            raise _invalid(payload, exc) from exc.__cause__

    def _build_tables(self) -> tuple[tuple[Reader, ...], tuple[Reader, ...]]:
        """Dispatch tables for outside and inside a streamed block, by type byte."""
        version = self.protocol_version
        outside: dict[int, Reader] = {}
        inside: dict[int, Reader] = {}
        for kind in MESSAGE_TYPES:
            if kind.since_version > version:
                continue
            code = kind.code[0]
            read: Reader = kind.read
            if self.parallel_streaming and kind.read_parallel is not None:
                read = kind.read_parallel
            if kind.switches_block:
                read = self._switching(read, into_block=kind.in_block is InBlock.NEVER)
            if kind.in_block is not InBlock.ONLY:
                outside[code] = read
            if version < STREAMING_VERSION:
                continue
            if kind.in_block is InBlock.AFTER_XID:
                inside[code] = _after_xid(kind.read)
            elif kind.in_block is not InBlock.NEVER:
                inside[code] = read
        return (
            _dispatch_table(outside, inside, "outside a streamed block", version),
            _dispatch_table(inside, outside, "inside a streamed block", version),
        )

    def _switching(self, read: Reader, into_block: bool) -> Reader:
        """``read``, then move into (or out of) a streamed block."""

        def read_and_switch(buf: bytes) -> PgOutputMessage:
            message = read(buf)
            self._table = self._inside if into_block else self._outside
            return message

        return read_and_switch


def _invalid(payload: bytes, exc: Malformed) -> ProtocolError:
    return ProtocolError(
        f"invalid {_NAMES.get(payload[0], 'pgoutput')} message at byte {exc.offset}: {exc.reason}"
    )


def _after_xid(read: ChangeReader) -> Reader:
    """A change reader for inside a streamed block, where an xid comes first."""

    def read_streamed(buf: bytes) -> PgOutputMessage:
        return read(buf, 5, read_xid(buf))

    return read_streamed


def _dispatch_table(
    readers: dict[int, Reader], elsewhere: dict[int, Reader], where: str, version: int
) -> tuple[Reader, ...]:
    """A reader for each of the 256 type bytes; those not in ``readers`` raise."""
    table: list[Reader] = []
    for code in range(256):
        if code in readers:
            table.append(readers[code])
        elif code in elsewhere:
            table.append(_misplaced(where))
        elif code in _NAMES:
            table.append(_unsupported(_NAMES[code], version))
        else:
            table.append(_unknown)
    return tuple(table)


def _misplaced(where: str) -> Reader:
    def read(buf: bytes) -> NoReturn:
        raise Malformed(0, f"not expected {where}")

    return read


def _unsupported(name: str, version: int) -> Reader:
    def read(buf: bytes) -> NoReturn:
        raise Malformed(0, f"{name} is not sent at protocol version {version}")

    return read


def _unknown(buf: bytes) -> NoReturn:
    raise ProtocolError(f"unknown pgoutput message type {byte_repr(buf[0])} at byte 0")
