"""Where the changes of a table go: one :class:`Route` per attached listener, shaping
events by its fields, conditions and key, and the one route of logical decoding messages."""

import functools
import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..events import Event, MessageEvent, build_delete, build_insert, build_update, format_lsn
from ..conditions import Condition
from ..listener import Listener, RunningCalls
from ..operations import Operation
from .acknowledgement import Transaction
from .workers import Executor

__all__ = ["BATCH_SIZE", "KeyReader", "Route", "MessageRoute", "describe_event", "key_reader", "unshaped_event"]

#: A row -> the values of its key columns, in key order.
KeyReader = Callable[[Dict[str, Any]], Tuple[Any, ...]]

INSERT, UPDATE = Operation.INSERT, Operation.UPDATE

#: Events a max_parallel=1 listener gets per hand-off at most.
BATCH_SIZE = 256


class Route:
    """One attached listener: how its events are shaped and where they go."""

    def __init__(self, listener: Listener, since_lsn: int, workers: Executor) -> None:
        self.listener = listener
        self.table_text = str(listener.table)  # the events' table, formatted once
        config = listener.config
        self.fields = config.fields
        self.use_conditions(listener.conditions)
        self.plain = not config.fields and not config.conditions
        self.since_lsn = since_lsn
        self.batch_size = BATCH_SIZE if config.max_parallel == 1 else 1
        self.workers = workers
        self.active = True
        self.pending: List[Event] = []  # touched by the replication thread only
        self.pending_txn: Optional[Transaction] = None
        self.pending_bytes = 0  # of the changes behind ``pending``
        self.running_calls = listener.running_calls
        self.still_wanted = listener.is_registered
        self.key_columns: Tuple[str, ...] = ()
        self.key_of: Optional[KeyReader] = None
        self.set_table_key(())

    def set_table_key(self, columns: Sequence[str]) -> None:
        """The table's own key is now ``columns``: the events' key, unless the listener
        configured its own. Called by the replication thread, or before the route is
        routed to."""
        self.key_columns = self.listener.config.primary_key or tuple(columns)
        self.key_of = key_reader(self.key_columns)

    def key_changed(self, old: Optional[Dict[str, Any]], new: Dict[str, Any]) -> bool:
        """Whether an UPDATE from ``old`` to ``new`` changes this listener's key. Without
        the old row (the server sends it only when the replica identity changed) it did not."""
        key_of = self.key_of
        return key_of is not None and old is not None and key_of(old) != key_of(new)

    def key_change_events(self, table: str, lsn: int, txn: Transaction, old: Dict[str, Any],
                          new: Dict[str, Any]) -> List[Event]:
        """An UPDATE that changed the key: the DeleteEvent of the old row, then the
        InsertEvent of the new one, each only if its row meets the conditions, whatever
        ``fields`` says (the key changed even if no field did)."""
        meta = (table, lsn, txn.commit_lsn, txn.xid, txn.commit_time)
        key_of = self.key_of
        assert key_of is not None
        events: List[Event] = []
        if not self.conditions or self.matches(old):
            events.append(build_delete(*meta, self.project(old), key_of(old)))
        if not self.conditions or self.matches(new):
            events.append(build_insert(*meta, self.project(new), key_of(new)))
        return events

    def callbacks_for(self, event: Event) -> Tuple[Callable[[Any], Any], ...]:
        return self.listener.callbacks_for(event.operation)

    def use_conditions(self, conditions: Tuple[Condition, ...]) -> None:
        """Check these conditions from now on (the listener's, once the driver typed
        their values)."""
        self.conditions = conditions
        self._tests = tuple(condition.holds for condition in conditions)

    def matches(self, row: Optional[Dict[str, Any]]) -> bool:
        if row is None:
            return False
        for holds in self._tests:
            if not holds(row):
                return False
        return True

    def project(self, row: Dict[str, Any]) -> Dict[str, Any]:
        if not self.fields:
            return row
        return {field: row[field] for field in self.fields if field in row}

    def event_for(
        self, operation: Operation, table: str, lsn: int, txn: Transaction, old: Any, new: Any,
    ) -> Optional[Event]:
        """The event this listener gets for a row change, shaped by its fields and
        conditions, or None; an UPDATE that changes the key is not one event (see
        :meth:`key_change_events`). The rows are as for :func:`unshaped_event`."""
        meta = (table, lsn, txn.commit_lsn, txn.xid, txn.commit_time)
        key_of = self.key_of
        if operation is INSERT:
            if self.conditions and not self.matches(new):
                return None
            return build_insert(*meta, self.project(new), None if key_of is None else key_of(new))
        if operation is UPDATE:
            if self.conditions:
                new_matches = self.matches(new)
                if old is not None:
                    old_matches = self.matches(old)
                    if old_matches and not new_matches:
                        return build_delete(*meta, self.project(old), None if key_of is None else key_of(old))
                    if new_matches and not old_matches:
                        return build_insert(*meta, self.project(new), None if key_of is None else key_of(new))
                if not new_matches:
                    return None
            if self.fields and old is not None and all(
                old.get(field) == new.get(field) for field in self.fields
            ):
                return None
            return build_update(*meta, None if old is None else self.project(old), self.project(new),
                                None if key_of is None else key_of(new))
        if self.conditions and not self.matches(old):
            return None
        return build_delete(*meta, self.project(old), None if key_of is None else key_of(old))


def describe_event(event: Any) -> str:
    """What a log line says about an event: where it comes from, never its rows."""
    if isinstance(event, MessageEvent):
        return f"the message with prefix {event.prefix!r} at {format_lsn(event.lsn)}"
    text = f"{event.operation} on {event.table} at {format_lsn(event.lsn)}"
    key = getattr(event, "key", None)
    return text if key is None else f"{text}, key {key!r}"


def unshaped_event(
    operation: Operation, table: str, lsn: int, txn: Transaction, old: Any, new: Any,
    key_of: Optional[KeyReader] = None,
) -> Event:
    """The event every listener without fields or conditions, and with the same key,
    gets: built once per change (not for an UPDATE that changes the key).

    ``new`` is a row for an INSERT or UPDATE, ``old`` one for a DELETE (and None or a
    row for an UPDATE): the operation says which, so their type is left open here.
    """
    if operation is INSERT:
        return build_insert(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, new,
                            None if key_of is None else key_of(new))
    if operation is UPDATE:
        return build_update(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, old, new,
                            None if key_of is None else key_of(new))
    return build_delete(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, old,
                        None if key_of is None else key_of(old))


@functools.lru_cache(maxsize=None)
def key_reader(columns: Tuple[str, ...]) -> Optional[KeyReader]:
    """What reads the key ``columns`` from a row, or None for no key. One reader per
    set of columns, so that the dispatcher can tell routes with the same key by
    identity. A column the row lacks (dropped since the listener was checked) reads as
    None rather than failing every event."""
    if not columns:
        return None
    if len(columns) == 1:
        column = columns[0]

        def read_one(row: Dict[str, Any]) -> Tuple[Any, ...]:
            return (row.get(column),)

        return read_one
    read_all = operator.itemgetter(*columns)

    def read(row: Dict[str, Any]) -> Tuple[Any, ...]:
        try:
            values: Tuple[Any, ...] = read_all(row)
            return values
        except KeyError:
            return tuple(row.get(column) for column in columns)

    return read


class MessageRoute:
    """The ``on_message`` callbacks: one worker, so messages keep their order."""

    def __init__(self, workers: Executor) -> None:
        self.handlers: Tuple[Tuple[str, Callable[[Any], Any]], ...] = ()  # copied on write
        self.workers = workers
        self.active = True
        self.batch_size = BATCH_SIZE
        self.pending: List[Any] = []
        self.pending_txn: Optional[Transaction] = None
        self.pending_bytes = 0
        self.running_calls = RunningCalls()
        self.still_wanted: Callable[[Any], bool] = lambda callback: True  # no way to unregister

    def callbacks_for(self, event: MessageEvent) -> Tuple[Callable[[Any], Any], ...]:
        return tuple(callback for prefix, callback in self.handlers if event.prefix.startswith(prefix))
