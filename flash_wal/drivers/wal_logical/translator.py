"""From parsed pgoutput messages to Sink calls, across sessions (no I/O).

One :class:`ChangeTranslator` serves every session of a replication thread, so what a
lost connection interrupted can be finished exactly once:

- A transaction whose Begin was read but not its Commit is sent again, whole, by the
  next session (its commit lies after the position the session resumes from). Its
  changes already dispatched belong to the same :class:`~flash_wal.dispatcher.Transaction`
  and are not dispatched twice: the first ones the server sends again are skipped by
  count, since decoding one slot's WAL gives the same changes in the same order.
- Streamed transactions still in progress are dropped (the server sends them again);
  committed ones are replayed to the end before the next session starts.
- :attr:`received_lsn` is the end of the last transaction received whole: the next
  session starts there, so nothing delivered in this process is delivered again.
"""

import logging
from typing import Any, Callable, Dict, Generator, Optional, Tuple

from ...decoding import RelationCache, fill_unchanged_toast
from ...events import MessageEvent
from ...errors import ReplicationError
from ...operations import Operation
from ...pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    PgOutputParser,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Update,
)
from ..base import Sink
from .held import HeldTransaction

__all__ = ["ChangeTranslator"]

logger = logging.getLogger(__name__)

INSERT, UPDATE, DELETE = Operation.INSERT, Operation.UPDATE, Operation.DELETE

#: The replay of a committed streamed transaction: one frame per step.
Replay = Generator[None, None, None]


class ChangeTranslator:
    """Turns parsed pgoutput messages into calls on a :class:`~flash_wal.drivers.base.Sink`.

    Streamed transactions (``use_streaming``) are held, frame by frame, until their
    Stream Commit; then :meth:`handle` returns an iterator that replays them, one
    frame per step, so the caller keeps control between frames (back-pressure,
    status updates, stopping) however large the transaction.
    """

    def __init__(self, sink: Sink, relations: RelationCache, parser: PgOutputParser, stream_buffer_bytes: int) -> None:
        self.sink = sink
        self.relations = relations
        self.parser = parser
        self.txn: Any = None
        #: End of the last transaction received whole (its Commit read, or its replay done).
        self.received_lsn = 0
        self._changes = 0  # change frames read of self.txn, skipped ones included
        self._skip = 0  # of those, how many an earlier session dispatched already
        self._interrupted: Optional[Tuple[Any, int]] = None  # (transaction, changes dispatched)
        self._stream_buffer_bytes = stream_buffer_bytes
        self._held: Dict[int, HeldTransaction] = {}  # top-level xid -> its frames
        self._streaming: Optional[HeldTransaction] = None  # the block being received
        self._replay: Optional[Replay] = None
        self._size = 0  # bytes of the message being handled, passed on with its change
        self._handlers: Dict[type, Callable[[Any, int], Optional[Replay]]] = {
            StreamStart: self._stream_start,
            StreamStop: self._stream_stop,
            StreamCommit: self._stream_commit,
            StreamAbort: self._stream_abort,
            Begin: self._begin,
            Commit: self._commit,
            Relation: self._relation,
            Insert: self._insert,
            Update: self._update,
            Delete: self._delete,
            Truncate: self._truncate,
            Type: self._ignore,
            Origin: self._ignore,
            Message: self._message,
        }

    @property
    def settled(self) -> bool:
        """Nothing received is unfinished here: no open, held or interrupted transaction."""
        return self.txn is None and not self._held and self._replay is None and self._interrupted is None

    def handle(self, message: Any, lsn: int, payload: bytes) -> Optional[Replay]:
        """Act on one message; for a Stream Commit, return the replay to run."""
        self._size = len(payload)
        held = self._streaming
        if held is not None and message.__class__ is not StreamStop:
            if message.__class__ is Relation:
                self._relation(message, lsn)  # later blocks and transactions rely on it
            if message.__class__ is not Origin:
                held.append(message.xid, lsn, payload)
            return None
        try:
            handler = self._handlers[message.__class__]
        except KeyError:
            raise ReplicationError(f"unexpected {type(message).__name__} message") from None
        return handler(message, lsn)

    def interrupted(self) -> None:
        """The session ended (its replay, if any, already finished): keep what the next
        one needs to finish the open transaction once, drop what it sends again."""
        for held in self._held.values():
            held.close()
        self._held.clear()
        self._streaming = None
        self.parser.reset()
        if self.txn is not None:
            self.sink.flush()  # what was read of it is delivered; the rest comes again
            self._interrupted = (self.txn, max(self._changes, self._skip))
            self.txn = None

    def new_slot(self) -> None:
        """The next session reads a new temporary slot, which starts after anything
        interrupted: what was read of it is all there will be."""
        if self._interrupted is not None:
            self.sink.abandon(self._interrupted[0])
            self._interrupted = None

    def close(self) -> None:
        """Drop every held transaction, removing its temporary file."""
        if self._replay is not None:
            self._replay.close()
            self._replay = None
        for held in self._held.values():
            held.close()
        self._held.clear()
        self._streaming = None

    # --- transactions -----------------------------------------------------------------

    def _open(self, final_lsn: int, xid: Optional[int], commit_time: Any) -> None:
        self._changes = self._skip = 0
        interrupted = self._interrupted
        if interrupted is not None:
            self._interrupted = None
            txn, dispatched = interrupted
            if txn.commit_lsn == final_lsn and txn.xid == xid:
                self.txn, self._skip = txn, dispatched
                logger.debug("resuming transaction %s after %d changes already delivered", xid, dispatched)
                return
            # Not sent again (a new temporary slot starts later): it ends with what came.
            self.sink.abandon(txn)
        self.txn = self.sink.begin(final_lsn, xid, commit_time)

    def _close(self, end_lsn: int) -> None:
        self.sink.commit(self.txn, end_lsn)
        self.txn = None
        self.received_lsn = end_lsn

    def _begin(self, message: Begin, lsn: int) -> None:
        self._open(message.final_lsn, message.xid, message.commit_time)

    def _commit(self, message: Commit, lsn: int) -> None:
        self._close(message.end_lsn)

    # --- streamed transactions --------------------------------------------------------

    def _stream_start(self, message: StreamStart, lsn: int) -> None:
        held = self._held.get(message.xid)
        if held is None:
            held = self._held[message.xid] = HeldTransaction(message.xid, self._stream_buffer_bytes)
        self._streaming = held

    def _stream_stop(self, message: StreamStop, lsn: int) -> None:
        self._streaming = None

    def _stream_abort(self, message: StreamAbort, lsn: int) -> None:
        held = self._held.get(message.xid)
        if held is None:
            return
        if message.subxid == message.xid:
            self._held.pop(message.xid).close()
        else:
            held.abort_subtransaction(message.subxid)

    def _stream_commit(self, message: StreamCommit, lsn: int) -> Replay:
        held = self._held.pop(message.xid, None) or HeldTransaction(message.xid, 0)
        self._replay = self._replayed(held, message)
        return self._replay

    def _replayed(self, held: HeldTransaction, commit: StreamCommit) -> Replay:
        try:
            self._open(commit.commit_lsn, commit.xid, commit.commit_time)
            parse_held, handlers = self.parser.parse_held, self._handlers
            for lsn, payload in held.frames():
                message = parse_held(payload)
                self._size = len(payload)
                handlers[message.__class__](message, lsn)
                yield
            self._close(commit.end_lsn)
        finally:
            held.close()
            self._replay = None

    # --- changes ----------------------------------------------------------------------

    def _relation(self, message: Relation, lsn: int) -> None:
        decoder = self.relations.update(message)
        self.sink.table_key(decoder.table, decoder.primary_key)

    def _ignore(self, message: Any, lsn: int) -> None:
        pass

    def _message(self, message: Message, lsn: int) -> None:
        sink = self.sink
        if message.transactional:
            self._changes += 1
            if self._changes <= self._skip or not sink.wants_messages:
                return
            # Outside streaming, a transaction is sent once it has committed.
            txn = self.txn
            event = MessageEvent(prefix=message.prefix, content=message.content, transactional=True,
                                 lsn=message.lsn, xid=txn.xid)
            sink.message(txn, event)
            return
        if not sink.wants_messages:
            return
        # Sent as decoded, outside any transaction: it gets a transaction of its own
        # for the bookkeeping, acknowledged at its own position.
        txn = sink.begin(message.lsn, None, None)
        event = MessageEvent(prefix=message.prefix, content=message.content, transactional=False,
                             lsn=message.lsn, xid=None)
        sink.message(txn, event)
        sink.commit(txn, message.lsn)

    def _insert(self, message: Insert, lsn: int) -> None:
        self._changes += 1
        if self._changes <= self._skip:
            return
        decoder = self.relations.get(message.relid)
        if self.sink.wants(decoder.table):
            self.sink.change(self.txn, INSERT, decoder.table, lsn, None, decoder.decode(message.new), self._size)

    def _update(self, message: Update, lsn: int) -> None:
        self._changes += 1
        if self._changes <= self._skip:
            return
        decoder = self.relations.get(message.relid)
        if self.sink.wants(decoder.table):
            old: Optional[Dict[str, Any]]
            if message.old is not None and not message.old_is_key:
                old, new = decoder.decode_update(message.old, message.new)  # REPLICA IDENTITY FULL
            else:
                old = None if message.old is None else decoder.decode_key(message.old)
                new = decoder.decode(message.new)
                fill_unchanged_toast(new, old)
            self.sink.change(self.txn, UPDATE, decoder.table, lsn, old, new, self._size)

    def _delete(self, message: Delete, lsn: int) -> None:
        self._changes += 1
        if self._changes <= self._skip:
            return
        decoder = self.relations.get(message.relid)
        if self.sink.wants(decoder.table):
            old = decoder.decode_key(message.old) if message.old_is_key else decoder.decode(message.old)
            self.sink.change(self.txn, DELETE, decoder.table, lsn, old, None, self._size)

    def _truncate(self, message: Truncate, lsn: int) -> None:
        self._changes += 1
        if self._changes <= self._skip:
            return
        for relid in message.relids:
            decoder = self.relations.get(relid)
            if self.sink.wants(decoder.table):
                self.sink.truncate(self.txn, decoder.table, lsn, message.cascade, message.restart_identity)
