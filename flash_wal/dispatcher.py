"""Fan-out of decoded changes to listeners, and the bookkeeping behind acknowledgement.

The replication thread calls :meth:`Dispatcher.begin`, :meth:`Dispatcher.change`
and :meth:`Dispatcher.commit` (the :class:`~flash_wal.drivers.base.Sink` calls);
nothing else does. It turns each change into one event
per interested listener and hands the events to that listener's workers in batches,
so the cost of crossing threads is paid per batch, not per event.

A listener with ``max_parallel=1`` has one worker: its callbacks run one at a time in
commit order. With N > 1 (or -1: up to :data:`UNBOUNDED_WORKERS`) events are handed out
one by one to up to N workers. Whatever the setting, a transaction is done only when every task holding
one of its events has run, and :class:`AckTracker` acknowledges done transactions in
commit order only.
"""

import collections
import logging
import threading
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .drivers.base import Sink
from .events import Event, MessageEvent, TruncateEvent, build_delete, build_insert, build_update, format_lsn
from .listener import UNBOUNDED_WORKERS, Listener, RunningCalls, TableName
from .operations import Operation

__all__ = ["Transaction", "AckTracker", "Route", "Dispatcher"]

logger = logging.getLogger(__name__)

ErrorHandler = Callable[[BaseException, Any], Any]

INSERT, UPDATE, TRUNCATE = Operation.INSERT, Operation.UPDATE, Operation.TRUNCATE

#: Events a max_parallel=1 listener gets per hand-off at most.
BATCH_SIZE = 256

_in_callback = threading.local()  # .active: this worker thread is running a task


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
        self._tasks = 0
        self.acked_lsn = 0
        self.events_delivered = 0
        #: Called (under the tracker's lock, so it must not block) when acked_lsn moves.
        self.on_advance: Optional[Callable[[], None]] = None

    def begin(self, txn: Transaction) -> None:
        with self._lock:
            self._open.append(txn)

    def add_task(self, txn: Transaction, events: int) -> None:
        with self._lock:
            txn.pending += 1
            self._tasks += 1
            self._queued_events += events

    def task_done(self, txn: Transaction, events: int, delivered: Optional[int] = None) -> None:
        """A task of ``events`` events has run; ``delivered`` of them, when it stopped short."""
        with self._lock:
            txn.pending -= 1
            self._tasks -= 1
            self._queued_events -= events
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


class _Task:
    __slots__ = ("route", "txn", "events")

    def __init__(self, route: Any, txn: Transaction, events: List[Any]) -> None:
        self.route = route
        self.txn = txn
        self.events = events


class _Workers:
    """Up to ``limit`` threads (-1: :data:`UNBOUNDED_WORKERS`) running one listener's
    tasks; a thread waits for the next task once it is done with one."""

    def __init__(self, name: str, limit: int, run: Callable[[_Task], None]) -> None:
        self._name = name
        self._limit = UNBOUNDED_WORKERS if limit == -1 else limit
        self._run_task = run
        self._cond = threading.Condition()
        self._tasks: Deque[_Task] = collections.deque()
        self._threads: List[threading.Thread] = []
        self._waiting = 0
        self._closed = False

    def put(self, task: _Task) -> None:
        with self._cond:
            if not self._closed:
                self._tasks.append(task)
                if self._waiting:
                    self._waiting -= 1
                    self._cond.notify()
                elif len(self._threads) < self._limit:
                    thread = threading.Thread(
                        target=self._loop, name=f"flash_wal-{self._name}-{len(self._threads)}", daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
                return
        # Detached while the replication thread was routing to it: the task only
        # needs its bookkeeping, which must not wait for a worker that is gone.
        self._run_task(task)

    def _loop(self) -> None:
        cond, tasks = self._cond, self._tasks
        while True:
            with cond:
                while not tasks:
                    if self._closed:
                        return
                    self._waiting += 1
                    cond.wait()
                task = tasks.popleft()
            self._run_task(task)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._waiting = 0
            self._cond.notify_all()


class Route:
    """One attached listener: how its events are shaped and where they go."""

    def __init__(self, listener: Listener, since_lsn: int, workers: _Workers) -> None:
        self.listener = listener
        config = listener.config
        self.fields = config.fields
        self.conditions = config.conditions
        self.plain = not config.fields and not config.conditions
        self.since_lsn = since_lsn
        self.batch_size = BATCH_SIZE if config.max_parallel == 1 else 1
        self.workers = workers
        self.active = True
        self.pending: List[Event] = []  # touched by the replication thread only
        self.pending_txn: Optional[Transaction] = None
        self.running_calls = listener.running_calls
        self.still_wanted = listener.is_registered

    def callbacks_for(self, event: Event) -> Tuple[Callable[[Any], Any], ...]:
        return self.listener.callbacks_for(event.operation)

    def matches(self, row: Optional[Dict[str, Any]]) -> bool:
        return row is not None and all(condition.holds(row) for condition in self.conditions)

    def project(self, row: Dict[str, Any]) -> Dict[str, Any]:
        if not self.fields:
            return row
        return {field: row[field] for field in self.fields if field in row}

    def event_for(
        self, operation: Operation, table: str, lsn: int, txn: Transaction,
        old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]],
    ) -> Optional[Event]:
        """The event this listener gets for a row change, shaped by its fields and
        conditions, or None."""
        meta = (table, lsn, txn.commit_lsn, txn.xid, txn.commit_time)
        if operation is INSERT:
            if self.conditions and not self.matches(new):
                return None
            return build_insert(*meta, self.project(new))
        if operation is UPDATE:
            if self.conditions:
                new_matches = self.matches(new)
                if old is not None:
                    old_matches = self.matches(old)
                    if old_matches and not new_matches:
                        return build_delete(*meta, self.project(old))
                    if new_matches and not old_matches:
                        return build_insert(*meta, self.project(new))
                if not new_matches:
                    return None
            if self.fields and old is not None and all(
                old.get(field) == new.get(field) for field in self.fields
            ):
                return None
            return build_update(*meta, None if old is None else self.project(old), self.project(new))
        if self.conditions and not self.matches(old):
            return None
        return build_delete(*meta, self.project(old))


def describe_event(event: Any) -> str:
    """What a log line says about an event: where it comes from, never its rows."""
    if isinstance(event, MessageEvent):
        return f"the message with prefix {event.prefix!r} at {format_lsn(event.lsn)}"
    text = f"{event.operation} on {event.table} at {format_lsn(event.lsn)}"
    key = getattr(event, "key", None)
    return text if key is None else f"{text}, key {key!r}"


def _unshaped_event(
    operation: Operation, table: str, lsn: int, txn: Transaction,
    old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]],
) -> Event:
    """The event every listener without fields or conditions gets: built once per change."""
    if operation is INSERT:
        return build_insert(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, new)
    if operation is UPDATE:
        return build_update(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, old, new)
    return build_delete(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, old)


class MessageRoute:
    """The ``on_message`` callbacks: one worker, so messages keep their order."""

    def __init__(self, workers: _Workers) -> None:
        self.handlers: Tuple[Tuple[str, Callable[[Any], Any]], ...] = ()  # copied on write
        self.workers = workers
        self.active = True
        self.batch_size = BATCH_SIZE
        self.pending: List[Any] = []
        self.pending_txn: Optional[Transaction] = None
        self.running_calls = RunningCalls()
        self.still_wanted: Callable[[Any], bool] = lambda callback: True  # no way to unregister

    def callbacks_for(self, event: MessageEvent) -> Tuple[Callable[[Any], Any], ...]:
        return tuple(callback for prefix, callback in self.handlers if event.prefix.startswith(prefix))


class Dispatcher(Sink):
    """Routes changes to attached listeners and runs their callbacks on worker threads."""

    def __init__(self, on_error: Optional[ErrorHandler] = None, max_queued_events: int = 10_000) -> None:
        self.tracker = AckTracker()
        self.max_queued_events = max_queued_events
        self._on_error = on_error
        self._lock = threading.Lock()
        # Both maps are replaced whole on change, so the replication thread reads
        # them without a lock.
        self._routes: Dict[TableName, Tuple[Route, ...]] = {}
        self._by_listener: Dict[Listener, Route] = {}
        self.callbacks_failed = 0
        self._started_batches: List[Any] = []  # routes with pending events (replication thread)
        self._messages = MessageRoute(_Workers("messages", 1, self._run))
        self._closing = False

    # --- listeners (any thread) -------------------------------------------------------

    def attach(self, listener: Listener, since_lsn: int = 0) -> None:
        """Route changes committed after ``since_lsn`` on the listener's table to it."""
        with self._lock:
            workers = _Workers(str(listener.table), listener.config.max_parallel, self._run)
            route = Route(listener, since_lsn, workers)
            by_listener = dict(self._by_listener)
            by_listener[listener] = route
            routes = dict(self._routes)
            routes[listener.table] = routes.get(listener.table, ()) + (route,)
            self._by_listener, self._routes = by_listener, routes

    def detach(self, listener: Listener) -> None:
        """Stop routing to ``listener``; its queued events are dropped. A call of its
        callbacks already running may go on: ``listener.wait_for_running_calls()``
        waits for it."""
        with self._lock:
            by_listener = dict(self._by_listener)
            route = by_listener.pop(listener)
            route.active = False
            routes = dict(self._routes)
            remaining = tuple(r for r in routes[listener.table] if r is not route)
            if remaining:
                routes[listener.table] = remaining
            else:
                del routes[listener.table]
            self._by_listener, self._routes = by_listener, routes
        route.workers.close()

    def on_message(self, prefix: str, callback: Callable[[Any], Any]) -> None:
        """Call ``callback`` for every logical decoding message whose prefix starts with ``prefix``."""
        with self._lock:
            self._messages.handlers += ((prefix, callback),)

    @property
    def wants_messages(self) -> bool:
        return bool(self._messages.handlers)

    def routes_for(self, table: TableName) -> Tuple[Route, ...]:
        return self._routes.get(table, ())

    # --- the replication thread -------------------------------------------------------

    def begin(self, commit_lsn: int, xid: Optional[int], commit_time: Any) -> Transaction:
        txn = Transaction(commit_lsn, xid, commit_time)
        self.tracker.begin(txn)
        return txn

    def abandon(self, txn: Transaction) -> None:
        self.tracker.abandon(txn)

    @property
    def acked_lsn(self) -> int:  # type: ignore[override]
        return self.tracker.acked_lsn

    @property
    def settled(self) -> bool:
        return self.tracker.settled

    @property
    def queued_events(self) -> int:
        return self.tracker.queued_events

    @property
    def on_acknowledged(self) -> Optional[Callable[[], None]]:  # type: ignore[override]
        return self.tracker.on_advance

    @on_acknowledged.setter
    def on_acknowledged(self, callback: Optional[Callable[[], None]]) -> None:
        self.tracker.on_advance = callback

    def wait_for_room(self, timeout: float) -> bool:
        if not self.has_room():
            self.tracker.wait_for_change(timeout)
        return self.has_room()

    def change(
        self, txn: Transaction, routes: Tuple[Route, ...], operation: Operation, table: str, lsn: int,
        old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]],
    ) -> None:
        """Queue an INSERT, UPDATE or DELETE for each route that wants it.

        This runs once per change, so the plain case (no fields, no conditions: one
        event shared by all such routes) and the batching are spelled out here.
        """
        unshaped = None
        commit_lsn = txn.commit_lsn
        for route in routes:
            if commit_lsn <= route.since_lsn or not route.active:
                if self._closing:
                    txn.cut_short = True  # read after close(): never delivered, never acknowledged
                continue
            wanted = route.listener.callbacks_for(operation)
            if route.plain:
                if not wanted:
                    continue
                if unshaped is None:
                    unshaped = _unshaped_event(operation, table, lsn, txn, old, new)
                event = unshaped
            else:
                # Without a callback for the operation, an UPDATE may still become an
                # INSERT or DELETE through the listener's conditions.
                if not wanted and (operation is not UPDATE or not route.conditions):
                    continue
                event = route.event_for(operation, table, lsn, txn, old, new)
                if event is None or not route.listener.callbacks_for(event.operation):
                    continue
            pending = route.pending
            if not pending:
                route.pending_txn = txn
                self._started_batches.append(route)
            pending.append(event)
            if len(pending) >= route.batch_size:
                self._hand_off(route)

    def truncate(
        self, txn: Transaction, routes: Tuple[Route, ...], table: str, lsn: int,
        cascade: bool, restart_identity: bool,
    ) -> None:
        """Queue a TRUNCATE for each route with a callback for it (fields and conditions
        do not apply: there is no row)."""
        event = TruncateEvent(
            table=table, lsn=lsn, commit_lsn=txn.commit_lsn, xid=txn.xid, commit_time=txn.commit_time,
            cascade=cascade, restart_identity=restart_identity,
        )
        for route in routes:
            if not route.active and self._closing:
                txn.cut_short = True
            elif txn.commit_lsn > route.since_lsn and route.active and route.listener.callbacks_for(TRUNCATE):
                self._add_pending(route, txn, event)

    def message(self, txn: Transaction, event: MessageEvent) -> None:
        route = self._messages
        if route.callbacks_for(event):
            self._add_pending(route, txn, event)

    def _add_pending(self, route: Any, txn: Transaction, event: Any) -> None:
        pending = route.pending
        if not pending:
            route.pending_txn = txn
            self._started_batches.append(route)
        pending.append(event)
        if len(pending) >= route.batch_size:
            self._hand_off(route)

    def flush(self) -> None:
        """Hand every partly filled batch to its workers."""
        for route in self._started_batches:
            if route.pending:
                self._hand_off(route)
        self._started_batches.clear()

    def commit(self, txn: Transaction, end_lsn: int) -> None:
        self.flush()
        self.tracker.commit(txn, end_lsn)

    def has_room(self) -> bool:
        return self.tracker.queued_events < self.max_queued_events

    def _hand_off(self, route: Any) -> None:
        events, route.pending = route.pending, []
        txn = route.pending_txn
        self.tracker.add_task(txn, len(events))
        route.workers.put(_Task(route, txn, events))

    # --- worker threads ---------------------------------------------------------------

    def _run(self, task: _Task) -> None:
        route = task.route
        callbacks_for, still_wanted = route.callbacks_for, route.still_wanted
        running = route.running_calls
        calling, me = running.by_thread, threading.get_ident()
        delivered = None
        _in_callback.active = True
        try:
            for index, event in enumerate(task.events):
                if not route.active:  # detached, or the client closed: not one more call
                    if self._closing:
                        delivered = index  # the rest is not delivered: never acknowledged
                    break
                for callback in callbacks_for(event):
                    # Announced first, checked second: see RunningCalls.
                    calling[me] = callback
                    try:
                        if route.active and still_wanted(callback):
                            callback(event)
                    except BaseException as exc:
                        # A user callback, even one calling sys.exit(): report and go
                        # on, or the listener's worker would die with its queue.
                        self._callback_failed(exc, event, callback)
                    finally:
                        calling[me] = None
                        if running.waiters:
                            running.notify_finished()
        finally:
            _in_callback.active = False
            self.tracker.task_done(task.txn, len(task.events), delivered)

    def _callback_failed(self, exc: BaseException, event: Any, callback: Any) -> None:
        with self._lock:
            self.callbacks_failed += 1
        # Not the event itself: its rows may be large, or personal data.
        logger.error("callback %r failed on %s", callback, describe_event(event), exc_info=exc)
        if self._on_error is not None:
            try:
                self._on_error(exc, event)
            except BaseException:
                # SystemExit included: on a worker thread it would only end the worker,
                # leaving the listener's queue and acknowledgement stuck.
                logger.exception("on_error handler %r failed; delivery goes on", self._on_error)

    # --- shutdown ---------------------------------------------------------------------

    def drain(self, timeout: Optional[float]) -> bool:
        return self.tracker.wait_drained(timeout)

    def wake(self) -> None:
        self.tracker.wake()

    def in_callback(self) -> bool:
        """Whether the calling thread is one of ours, running a callback."""
        return getattr(_in_callback, "active", False)

    def close(self) -> None:
        """No callback starts from now on. Queued events are dropped, and their
        transactions are never acknowledged."""
        with self._lock:
            self._closing = True
            routes = list(self._by_listener.values()) + [self._messages]
        for route in routes:
            route.active = False
            route.workers.close()
