"""Backfill: the rows already in a table, merged into the live stream.

A backfill reads the table in key order, one chunk per short transaction, and merges
each chunk into the stream where the stream reaches that transaction's commit, the
chunk's watermark (the method of Netflix's DBLog, as Debezium's incremental snapshots
and Sequin's backfills use it). Between reading a chunk and reaching its watermark
the stream may deliver changes the chunk did not see; the rows they touched are
dropped from the chunk, since their change events already carry their state.

Which changes the chunk did not see is told exactly, not guessed from positions: the
chunk's transaction reads ``pg_current_snapshot()`` with its rows (REPEATABLE READ:
one snapshot for both), and pgoutput gives each transaction's xid. So a chunk row is
dropped only when a transaction its snapshot did not see, delivered before the
watermark, changed that row (see :class:`Merge`). Everything here is free of I/O: the
driver reads the chunks (``drivers/wal_logical/backfill_reader.py``) and the
dispatcher merges them on the replication thread.
"""

import enum
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import attr

__all__ = ["Backfill", "BackfillState", "Chunk", "Merge", "Snapshot", "WATERMARK_PREFIX", "DEFAULT_CHUNK_SIZE"]

#: The prefix of the logical decoding messages that mark where a chunk is merged;
#: never handed to ``on_message`` callbacks.
WATERMARK_PREFIX = "flash_wal.backfill"

#: Rows per chunk of a backfill started by ``ListenerConfig(backfill=True)``.
DEFAULT_CHUNK_SIZE = 5000

_XID_MASK = 0xFFFFFFFF


def _precedes(a: int, b: int) -> bool:
    """``a`` is older than ``b``, for 32-bit xids that wrap (TransactionIdPrecedes)."""
    return ((a - b) & _XID_MASK) >= 0x80000000


@attr.s(frozen=True, slots=True)
class Snapshot:
    """Which transactions a chunk's read saw: ``pg_current_snapshot()``, as 32-bit xids
    (pgoutput sends 32-bit xids; the snapshot's 64-bit ones carry an epoch above)."""

    xmin: int = attr.ib()
    xmax: int = attr.ib()
    running: FrozenSet[int] = attr.ib()

    @classmethod
    def parse(cls, text: str) -> "Snapshot":
        """``"xmin:xmax:xip,xip"`` as pg_current_snapshot() (or txid_current_snapshot()) prints it."""
        xmin, xmax, running = text.split(":")
        return cls(int(xmin) & _XID_MASK, int(xmax) & _XID_MASK,
                   frozenset(int(x) & _XID_MASK for x in running.split(",") if x))

    def saw(self, xid: int) -> bool:
        """Whether the chunk read saw what transaction ``xid`` committed."""
        if _precedes(xid, self.xmin):
            return True
        return _precedes(xid, self.xmax) and xid not in self.running


class _AllRows:
    """A TRUNCATE the chunk did not see: every row of it is stale."""

    def __repr__(self) -> str:
        return "ALL_ROWS"


ALL_ROWS = _AllRows()


class Chunk:
    """Rows read in one transaction, waiting for the stream to reach its watermark."""

    __slots__ = ("number", "rows", "last_key", "snapshot", "last", "txn", "delivered", "dropped")

    def __init__(self, number: int, rows: List[Dict[str, Any]], last_key: Tuple[Any, ...],
                 snapshot: Snapshot) -> None:
        self.number = number
        self.rows = rows
        #: The key of the last row read, as text: the next chunk starts after it.
        self.last_key = last_key
        self.snapshot = snapshot
        self.last = False  # fewer rows than asked for: nothing after it
        #: The transaction it was merged in (set by the replication thread).
        self.txn: Any = None
        self.delivered = 0  # ReadEvents handed to callbacks
        self.dropped = 0  # rows changed by a transaction the read did not see


KeyOf = Callable[[Dict[str, Any]], Any]


class Merge:
    """One backfill's side of the stream: the keys changed since its chunks were read,
    and the chunk waiting for its watermark.

    ``note_*`` and :meth:`take` run on the replication thread only; :meth:`expect`,
    :meth:`forget` and :meth:`wait_merged` on the backfill's reader.
    """

    def __init__(self, token: str, key_of: "KeyOf") -> None:
        self.token = token
        #: Reads the backfill's key from a row (the key its chunks are read in order of).
        self.key_of = key_of
        #: xid -> keys its transaction changed, kept until a chunk's snapshot saw it.
        self._changed: Dict[int, Any] = {}
        self._cond = threading.Condition()
        self._pending: Optional[Chunk] = None
        self.stopped = False

    # --- the replication thread -----------------------------------------------------

    def note_change(self, xid: Optional[int], old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]]) -> None:
        if xid is None:
            return
        key_of = self.key_of
        keys = self._changed.get(xid)
        if keys is ALL_ROWS:
            return
        if keys is None:
            keys = self._changed[xid] = set()
        if new is not None:
            keys.add(key_of(new))
        if old is not None:
            keys.add(key_of(old))

    def note_truncate(self, xid: Optional[int]) -> None:
        if xid is not None:
            self._changed[xid] = ALL_ROWS

    def take(self, number: int) -> Optional[Chunk]:
        """At chunk ``number``'s watermark: the chunk, its stale rows dropped; None if
        no such chunk is waiting (another process's, or one given up)."""
        with self._cond:
            chunk = self._pending
        if chunk is None or chunk.number != number:
            return None
        stale: Set[Any] = set()
        everything = False
        snapshot = chunk.snapshot
        for xid, keys in list(self._changed.items()):
            if snapshot.saw(xid):
                del self._changed[xid]  # every later read sees it too
            elif keys is ALL_ROWS:
                everything = True
            else:
                stale |= keys
        if everything:
            chunk.dropped, chunk.rows = len(chunk.rows), []
        elif stale:
            kept = [row for row in chunk.rows if self.key_of(row) not in stale]
            chunk.dropped, chunk.rows = len(chunk.rows) - len(kept), kept
        return chunk

    def merged(self, chunk: Chunk, txn: Any, delivered: int) -> None:
        with self._cond:
            chunk.txn, chunk.delivered, chunk.rows = txn, delivered, []
            if self._pending is chunk:
                self._pending = None
            self._cond.notify_all()

    # --- the reader -----------------------------------------------------------------

    def expect(self, chunk: Chunk) -> None:
        """``chunk`` is read: merge it when its watermark comes (set before its commit)."""
        with self._cond:
            self._pending = chunk

    def forget(self) -> None:
        with self._cond:
            self._pending = None
            self._cond.notify_all()

    def wait_merged(self, chunk: Chunk, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: chunk.txn is not None or self.stopped, timeout)

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._pending = None
            self._cond.notify_all()


class BackfillState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Backfill:
    """A backfill of one listener, returned by ``Client.backfill``: its progress, and
    a way to wait for it or to stop it."""

    def __init__(self, table: str, chunk_size: int, total: Optional[int] = None) -> None:
        self.table = table
        self.chunk_size = chunk_size
        #: The server's estimate of the table's rows (``pg_class.reltuples``), or None.
        self.total = total
        self._rows = 0
        self._state = BackfillState.RUNNING
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._on_cancel: List[Callable[[], None]] = []
        self.error: Optional[BaseException] = None
        self.started = time.monotonic()
        self.ended: Optional[float] = None

    @property
    def rows(self) -> int:
        """Rows delivered so far whose callbacks returned (resumed ones included)."""
        return self._rows

    @property
    def state(self) -> str:
        """``"running"``, ``"completed"``, ``"cancelled"`` or ``"failed"``."""
        return self._state.value

    @property
    def done(self) -> bool:
        """True once completed: every row delivered and its callbacks returned."""
        return self._state is BackfillState.COMPLETED

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the backfill ends; True if it completed, False if it was
        cancelled, failed, or ``timeout`` seconds passed first."""
        self._finished.wait(timeout)
        return self.done

    def cancel(self) -> None:
        """Stop reading; :meth:`wait` returns False from now on."""
        if self._finish(BackfillState.CANCELLED):
            for callback in list(self._on_cancel):
                callback()

    def stats(self) -> Dict[str, Any]:
        return {"table": self.table, "rows": self._rows, "total": self.total, "state": self.state,
                "chunk_size": self.chunk_size, "seconds": round(self.seconds, 3)}

    # --- for the driver -------------------------------------------------------------

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self._on_cancel.append(callback)

    def add_rows(self, rows: int) -> None:
        with self._lock:
            self._rows += rows

    def _finish(self, state: BackfillState, error: Optional[BaseException] = None) -> bool:
        with self._lock:
            if self._state is not BackfillState.RUNNING:
                return False
            self._state, self.error, self.ended = state, error, time.monotonic()
        self._finished.set()
        return True

    def complete(self) -> bool:
        return self._finish(BackfillState.COMPLETED)

    def fail(self, error: BaseException) -> bool:
        return self._finish(BackfillState.FAILED, error)

    def __repr__(self) -> str:
        total = "?" if self.total is None else self.total
        return f"<Backfill {self.table} {self.state} {self._rows}/{total} rows>"


def chunk_message(token: str, number: int) -> str:
    """The content of chunk ``number``'s watermark."""
    return f"{token}:{number}"


def parse_chunk_message(content: bytes) -> Optional[Tuple[str, int]]:
    try:
        token, number = content.decode("ascii").rsplit(":", 1)
        return token, int(number)
    except (UnicodeDecodeError, ValueError):
        return None


def key_text(values: Sequence[Any]) -> Tuple[Optional[str], ...]:
    """A key read as text (bytes from the server) as parameters for the next chunk's query."""
    return tuple(None if v is None else (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for v in values)
