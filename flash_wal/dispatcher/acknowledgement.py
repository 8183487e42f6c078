"""Which transactions may be acknowledged: the bookkeeping behind at-least-once.

Every task handed to a worker counts as pending on its transaction; a transaction is
done once its Commit was read and nothing of it is pending, and :class:`AckTracker`
acknowledges done transactions in commit order only, whatever order they finish in.
"""

import collections
import threading
from typing import Any, Callable, Deque, Optional

__all__ = ["Transaction", "AckTracker"]


class Transaction:
    """A transaction being delivered: what it is, and how much of it is still running."""

    __slots__ = ("commit_lsn", "end_lsn", "xid", "commit_time", "pending", "closed", "cut_short")

    def __init__(self, commit_lsn: int, xid: Optional[int], commit_time: Any) -> None:
        self.commit_lsn = commit_lsn
        self.end_lsn = 0
        self.xid = xid
        self.commit_time = commit_time
        self.pending = 0  # tasks handed to workers and not finished yet
        self.closed = False  # its Commit has been read
        self.cut_short = False  # events of it were not run (closing): never acknowledged


class AckTracker:
    """Finds the newest transaction that, with all before it, has run every callback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._open: Deque[Transaction] = collections.deque()
        self._queued_events = 0
        self._queued_bytes = 0
        self._tasks = 0
        self.acked_lsn = 0
        self.events_delivered = 0
        #: Called (under the tracker's lock, so it must not block) when acked_lsn moves.
        self.on_advance: Optional[Callable[[], None]] = None

    def begin(self, txn: Transaction) -> None:
        with self._lock:
            self._open.append(txn)

    def add_task(self, txn: Transaction, events: int, size: int = 0) -> None:
        with self._lock:
            txn.pending += 1
            self._tasks += 1
            self._queued_events += events
            self._queued_bytes += size

    def task_done(self, txn: Transaction, events: int, delivered: Optional[int] = None, size: int = 0) -> None:
        """A task of ``events`` events (``size`` bytes of changes) has run; ``delivered``
        of them, when it stopped short."""
        with self._lock:
            txn.pending -= 1
            self._tasks -= 1
            self._queued_events -= events
            self._queued_bytes -= size
            if delivered is None:
                self.events_delivered += events
            else:
                self.events_delivered += delivered
                txn.cut_short = True
            if txn.closed and not txn.pending:
                self._advance()
            self._changed.notify_all()

    def commit(self, txn: Transaction, end_lsn: int) -> None:
        with self._lock:
            txn.end_lsn = end_lsn
            txn.closed = True
            if not txn.pending:
                self._advance()

    def _advance(self) -> None:
        open_txns = self._open
        acked = self.acked_lsn
        while open_txns and open_txns[0].closed and not open_txns[0].pending and not open_txns[0].cut_short:
            done = open_txns.popleft()
            if done.end_lsn > acked:
                acked = done.end_lsn
        if acked != self.acked_lsn:
            self.acked_lsn = acked
            if self.on_advance is not None:
                self.on_advance()

    def abandon(self, txn: Transaction) -> None:
        """Forget a transaction whose Commit will never be read: it is never
        acknowledged, and holds back those after it only until its tasks have run."""
        with self._lock:
            txn.closed = True
            txn.end_lsn = 0
            self._advance()
            self._changed.notify_all()

    @property
    def settled(self) -> bool:
        """Every transaction begun has been acknowledged."""
        return not self._open

    @property
    def queued_events(self) -> int:
        return self._queued_events

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def wait_drained(self, timeout: Optional[float]) -> bool:
        """Wait until every task handed to workers has run; False on timeout."""
        with self._lock:
            return self._changed.wait_for(lambda: not self._tasks, timeout)

    def wait_for_change(self, timeout: float) -> None:
        """Sleep until a task finishes (or :meth:`wake`), at most ``timeout`` seconds."""
        with self._lock:
            self._changed.wait(timeout)

    def wake(self) -> None:
        with self._lock:
            self._changed.notify_all()
