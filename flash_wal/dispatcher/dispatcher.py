"""The dispatcher: the :class:`~flash_wal.drivers.base.Sink` a driver writes changes to.

The replication thread calls the Sink methods (begin, change, commit, ...); nothing
else does. Each change becomes one event per interested listener (see
:mod:`.routes`), handed to that listener's workers (:mod:`.workers`) in batches, so
the cost of crossing threads is paid per batch, not per event. Routes and the
:class:`~.acknowledgement.AckTracker` stay inside: a driver sees only the Sink.

A listener with ``max_parallel=1`` has one worker: its callbacks run one at a time in
commit order. With N > 1 (or -1: up to ``UNBOUNDED_WORKERS``) events are handed out
one by one to up to N workers. A batch is handed off early once the changes behind it
reach a sixteenth of ``max_queued_bytes``, so that few large rows wait in no count.
Whatever the setting, a transaction is done only when
every task holding one of its events has run, and the tracker acknowledges done
transactions in commit order only.

A callback may return a :class:`concurrent.futures.Future` to finish its work later
(a sink publishing to a broker, see :mod:`flash_wal.contrib.nats`): the worker goes on
to the next event at once, so callbacks are still called one at a time in commit order,
but the event counts as queued, and its transaction as not done, until the future is.
A future that fails is a failed callback (logged, ``on_error``); one that is cancelled
means the event was not delivered: its transaction is never acknowledged.

Why this module runs past 450 lines: :meth:`Dispatcher.change` is the hot path, spelled
out, and :meth:`Dispatcher.change_plainly` its readable twin; they stay side by side so
that whoever changes one sees the other (a unit test holds them equal).
"""

import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..backfill import WATERMARK_PREFIX, Merge
from ..drivers.base import Sink
from ..events import Event, MessageEvent, TruncateEvent
from ..errors import ConfigurationError
from ..listener import Listener
from ..operations import Operation
from ..table_name import TableName
from .acknowledgement import AckTracker, Transaction
from .deferred import finish_when_done
from .merging import Merges
from .route_index import TableRoutes
from .routes import MessageRoute, Route, describe_event, unshaped_event
from .workers import ExecutorFactory, Task, Workers, worker_threads

__all__ = ["Dispatcher", "ErrorHandler"]

logger = logging.getLogger(__name__)

ErrorHandler = Callable[[BaseException, Any], Any]

INSERT, UPDATE, TRUNCATE = Operation.INSERT, Operation.UPDATE, Operation.TRUNCATE

_in_callback = threading.local()  # .active: this worker thread is running a task


class Dispatcher(Sink):
    """Routes changes to attached listeners and runs their callbacks on worker threads."""

    def __init__(
        self, on_error: Optional[ErrorHandler] = None, max_queued_events: int = 10_000,
        max_queued_bytes: int = 64 * 1024 * 1024,
        executor_for: ExecutorFactory = worker_threads,
    ) -> None:
        self._executor_for = executor_for
        self._tracker = AckTracker()
        self.max_queued_events = max_queued_events
        self.max_queued_bytes = max_queued_bytes
        self._batch_bytes = max(max_queued_bytes // 16, 1)
        self._on_error = on_error
        self._lock = threading.Lock()
        # The maps are replaced whole on change, so the replication thread reads
        # them without a lock. _indexed holds the same routes as _routes, indexed by
        # their equality conditions (see .route_index): change() reads only it.
        self._routes: Dict[TableName, Tuple[Route, ...]] = {}
        self._indexed: Dict[TableName, TableRoutes] = {}
        self._by_listener: Dict[Listener, Route] = {}
        self._table_keys: Dict[TableName, Tuple[str, ...]] = {}  # from the replication thread
        self.callbacks_failed = 0
        self._started_batches: List[Any] = []  # routes with pending events (replication thread)
        self._messages = MessageRoute(Workers("messages", 1, self._run))
        self._merges = Merges()  # the running backfills
        self._closing = False

    # --- listeners (any thread) -------------------------------------------------------

    def attach(self, listener: Listener, since_lsn: int = 0) -> None:
        """Route changes committed after ``since_lsn`` on the listener's table to it."""
        with self._lock:
            route = Route(listener, since_lsn, self._executor_for(listener, self._run))
            route.set_table_key(self._table_keys.get(listener.table, ()))
            by_listener = dict(self._by_listener)
            by_listener[listener] = route
            routes = dict(self._routes)
            routes[listener.table] = routes.get(listener.table, ()) + (route,)
            self._replace_routes(by_listener, routes, listener.table)

    def detach(self, listener: Listener) -> None:
        """Stop routing to ``listener``; its queued events are dropped. A call of its
        callbacks already running may go on: ``listener.wait_for_running_calls()``
        waits for it."""
        with self._lock:
            by_listener = dict(self._by_listener)
            route = by_listener.pop(listener)
            route.active = False
            for merge, merging_route in self._merges.by_table.get(listener.table, ()):
                if merging_route is route:
                    merge.stop()
                    self._merges.remove(merge)
            routes = dict(self._routes)
            remaining = tuple(r for r in routes[listener.table] if r is not route)
            if remaining:
                routes[listener.table] = remaining
            else:
                del routes[listener.table]
            self._replace_routes(by_listener, routes, listener.table)
        route.workers.close()

    def _replace_routes(
        self, by_listener: Dict[Listener, Route], routes: Dict[TableName, Tuple[Route, ...]], table: TableName,
    ) -> None:
        """Publish new maps, the index first: a change routed meanwhile by the new index
        and a truncate by the old tuple differ only by the one route, whose
        ``since_lsn`` and ``active`` decide as they always did."""
        indexed = dict(self._indexed)
        if table in routes:
            indexed[table] = TableRoutes(routes[table])
        else:
            indexed.pop(table, None)
        self._indexed = indexed
        self._by_listener, self._routes = by_listener, routes

    def conditions_typed(self, listeners: Sequence[Listener]) -> None:
        with self._lock:
            tables = set()
            for listener in listeners:
                route = self._by_listener.get(listener)
                if route is not None:
                    route.use_conditions(listener.conditions)
                    tables.add(listener.table)
            # The index holds the values the routes check: built again from the typed ones.
            for table in tables:
                self._replace_routes(dict(self._by_listener), dict(self._routes), table)

    def on_message(self, prefix: str, callback: Callable[[Any], Any]) -> None:
        """Call ``callback`` for every logical decoding message whose prefix starts with ``prefix``."""
        with self._lock:
            self._messages.handlers += ((prefix, callback),)

    @property
    def wants_messages(self) -> bool:
        return bool(self._messages.handlers) or bool(self._merges)

    def start_merge(self, listener: Listener, merge: Merge) -> None:
        with self._lock:
            route = self._by_listener.get(listener)
            if route is None:
                raise ConfigurationError(f"{listener!r} is not attached")
            self._merges.add(merge, route)

    def end_merge(self, merge: Merge) -> None:
        with self._lock:
            self._merges.remove(merge)

    def acknowledged(self, txn: Transaction) -> bool:
        return bool(txn.end_lsn) and self._tracker.acked_lsn >= txn.end_lsn

    def wants(self, table: TableName) -> bool:
        return table in self._routes

    def table_key(self, table: TableName, columns: Sequence[str]) -> None:
        # Under the lock, so that a route attached meanwhile gets the new key too.
        with self._lock:
            self._table_keys[table] = tuple(columns)
            for route in self._routes.get(table, ()):
                route.set_table_key(columns)

    # --- the replication thread -------------------------------------------------------

    def begin(self, commit_lsn: int, xid: Optional[int], commit_time: Any) -> Transaction:
        txn = Transaction(commit_lsn, xid, commit_time)
        self._tracker.begin(txn)
        return txn

    def abandon(self, txn: Transaction) -> None:
        # A batch still being filled belongs to ``txn``: handed off now, so that the
        # next transaction's events start a batch of their own instead of joining it
        # (and that transaction, with nothing pending, being acknowledged at once).
        self.flush()
        self._tracker.abandon(txn)

    @property
    def acked_lsn(self) -> int:  # type: ignore[override]
        return self._tracker.acked_lsn

    @property
    def settled(self) -> bool:
        return self._tracker.settled

    @property
    def queued_events(self) -> int:
        return self._tracker.queued_events

    @property
    def queued_bytes(self) -> int:
        return self._tracker.queued_bytes

    @property
    def events_delivered(self) -> int:
        return self._tracker.events_delivered

    @property
    def on_acknowledged(self) -> Optional[Callable[[], None]]:
        return self._tracker.on_advance

    @on_acknowledged.setter
    def on_acknowledged(self, callback: Optional[Callable[[], None]]) -> None:
        self._tracker.on_advance = callback

    def wait_for_room(self, timeout: float) -> bool:
        if not self.has_room():
            self._tracker.wait_for_change(timeout)
        return self.has_room()

    def change(
        self, txn: Transaction, operation: Operation, table: TableName, lsn: int,
        old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]], size: int = 0,
    ) -> None:
        """Queue an INSERT, UPDATE or DELETE for each route that wants it.

        This runs once per change, so the plain case (no fields, no conditions: one
        event shared by all such routes) and the batching are spelled out here;
        :meth:`change_plainly` is its readable twin, and a unit test holds them equal.
        The index (:class:`~.route_index.TableRoutes`) leaves out the routes the rows
        cannot match; once closing, every route is looked at, as the plain twin does,
        since a skipped one marks the transaction cut short.
        """
        table_routes = self._indexed.get(table)
        if table_routes is None:
            return
        merging = self._merges.by_table
        if merging and table in merging:
            self._merges.note_change(table, txn, old, new)
        all_routes = table_routes.routes
        text = all_routes[0].table_text
        if table_routes.columns and not self._closing:
            routes = table_routes.reached_by(old, new)
        else:
            routes = all_routes
        unshaped: Optional[Event] = None
        unshaped_key_of: Any = None
        event: Optional[Event]
        commit_lsn = txn.commit_lsn
        # Whether the key changed is asked once per key reader (routes with the same key
        # share one), and only for an UPDATE that came with its old row.
        may_change_key = operation is UPDATE and old is not None
        checked_key_of: Any = None
        key_changed = False
        for route in routes:
            if commit_lsn <= route.since_lsn or not route.active:
                if self._closing:
                    txn.cut_short = True  # read after close(): never delivered, never acknowledged
                continue
            key_of = route.key_of
            if may_change_key and key_of is not None:
                if key_of is not checked_key_of:
                    checked_key_of, key_changed = key_of, route.key_changed(old, new)  # type: ignore[arg-type]
                if key_changed:
                    for event in route.key_change_events(text, lsn, txn, old, new):  # type: ignore[arg-type]
                        if route.listener.callbacks_for(event.operation):
                            self._add_pending(route, txn, event, size)
                    continue
            wanted = route.listener.callbacks_for(operation)
            if route.plain:
                if not wanted:
                    continue
                if unshaped is None or key_of is not unshaped_key_of:
                    unshaped = unshaped_event(operation, text, lsn, txn, old, new, key_of)
                    unshaped_key_of = key_of
                event = unshaped
            else:
                # Without a callback for the operation, an UPDATE may still become an
                # INSERT or DELETE through the listener's conditions.
                if not wanted and (operation is not UPDATE or not route.conditions):
                    continue
                event = route.event_for(operation, text, lsn, txn, old, new)
                if event is None or not route.listener.callbacks_for(event.operation):
                    continue
            # _add_pending, inlined: a method call per event is a tenth of this loop.
            pending = route.pending
            if not pending:
                route.pending_txn = txn
                self._started_batches.append(route)
            pending.append(event)
            route.pending_bytes += size
            if len(pending) >= route.batch_size or route.pending_bytes >= self._batch_bytes:
                self._hand_off(route)
        if self._closing and routes is not all_routes:  # close() began during the loop
            self._mark_cut_short(txn, all_routes)

    def _mark_cut_short(self, txn: Transaction, routes: Tuple[Route, ...]) -> None:
        commit_lsn = txn.commit_lsn
        if any(commit_lsn <= route.since_lsn or not route.active for route in routes):
            txn.cut_short = True

    def change_plainly(
        self, txn: Transaction, operation: Operation, table: TableName, lsn: int,
        old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]], size: int = 0,
    ) -> None:
        """What :meth:`change` does, written plainly: each route shapes its own event."""
        self._merges.note_change(table, txn, old, new)
        for route in self._routes.get(table, ()):
            if txn.commit_lsn <= route.since_lsn or not route.active:
                if self._closing:
                    txn.cut_short = True
                continue
            if operation is UPDATE and route.key_changed(old, new):  # type: ignore[arg-type]
                events = route.key_change_events(route.table_text, lsn, txn, old, new)  # type: ignore[arg-type]
            elif not route.listener.callbacks_for(operation) and (operation is not UPDATE or not route.conditions):
                continue
            else:
                event = route.event_for(operation, route.table_text, lsn, txn, old, new)
                events = [] if event is None else [event]
            for event in events:
                if route.listener.callbacks_for(event.operation):
                    self._add_pending(route, txn, event, size)

    def truncate(self, txn: Transaction, table: TableName, lsn: int, cascade: bool, restart_identity: bool) -> None:
        """Queue a TRUNCATE for each route with a callback for it (fields and conditions
        do not apply: there is no row)."""
        routes = self._routes.get(table, ())
        if not routes:
            return
        self._merges.note_truncate(table, txn)
        event = TruncateEvent(
            table=routes[0].table_text, lsn=lsn, commit_lsn=txn.commit_lsn, xid=txn.xid, commit_time=txn.commit_time,
            cascade=cascade, restart_identity=restart_identity,
        )
        for route in routes:
            if not route.active and self._closing:
                txn.cut_short = True
            elif txn.commit_lsn > route.since_lsn and route.active and route.listener.callbacks_for(TRUNCATE):
                self._add_pending(route, txn, event)

    def message(self, txn: Transaction, event: MessageEvent) -> None:
        if event.prefix == WATERMARK_PREFIX:  # a backfill's, never a user's
            if event.transactional:
                self._merges.watermark(txn, event, self._add_pending, self._closing)
            return
        route = self._messages
        if route.callbacks_for(event):
            self._add_pending(route, txn, event)

    def _add_pending(self, route: Any, txn: Transaction, event: Any, size: int = 0) -> None:
        pending = route.pending
        if not pending:
            route.pending_txn = txn
            self._started_batches.append(route)
        pending.append(event)
        route.pending_bytes += size
        if len(pending) >= route.batch_size or route.pending_bytes >= self._batch_bytes:
            self._hand_off(route)

    def flush(self) -> None:
        """Hand every partly filled batch to its workers."""
        for route in self._started_batches:
            if route.pending:
                self._hand_off(route)
        self._started_batches.clear()

    def commit(self, txn: Transaction, end_lsn: int) -> None:
        self.flush()
        self._tracker.commit(txn, end_lsn)

    def has_room(self) -> bool:
        # Asked before every frame read: the tracker's counters, read without their properties.
        tracker = self._tracker
        return tracker._queued_events < self.max_queued_events and tracker._queued_bytes < self.max_queued_bytes

    def _hand_off(self, route: Any) -> None:
        events, route.pending = route.pending, []
        size, route.pending_bytes = route.pending_bytes, 0
        txn = route.pending_txn
        self._tracker.add_task(txn, len(events), size)
        route.workers.put(Task(route, txn, events, size))

    # --- worker threads ---------------------------------------------------------------

    def _run(self, task: Task) -> None:
        route = task.route
        callbacks_for, still_wanted = route.callbacks_for, route.still_wanted
        running = route.running_calls
        calling, me = running.by_thread, threading.get_ident()
        delivered = None
        later: Optional[List[Tuple["Future[Any]", Any, Any]]] = None  # futures the callbacks returned
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
                            result = callback(event)
                            if isinstance(result, Future):
                                if later is None:
                                    later = []
                                later.append((result, event, callback))
                    except BaseException as exc:
                        # A user callback, even one calling sys.exit(): report and go
                        # on, or the listener's worker would die with its queue.
                        self.callback_failed(exc, event, callback)
                    finally:
                        calling[me] = None
                        if running.waiters:
                            running.notify_finished()
        finally:
            _in_callback.active = False
            if later is None:
                self.task_done(task, delivered)
            else:
                finish_when_done(self._tracker, task, delivered, later, self.callback_failed)

    # --- executors (any thread) ---------------------------------------------------------

    @property
    def closing(self) -> bool:
        """close() began: events an executor did not run are then never acknowledged."""
        return self._closing

    def task_done(self, task: Task, delivered: Optional[int] = None) -> None:
        """Every call of ``task`` has completed (or ``delivered`` of its events were run
        when it stopped short because its listener's route went inactive while closing).
        An executor that runs tasks its own way ends each with this."""
        self._tracker.task_done(task.txn, len(task.events), delivered, task.size)

    def callback_failed(self, exc: BaseException, event: Any, callback: Any) -> None:
        """Log a callback's exception and pass it to ``on_error``."""
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
        return self._tracker.wait_drained(timeout)

    def wake(self) -> None:
        self._tracker.wake()

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
