"""Where the changes of a table go: one :class:`Route` per attached listener, shaping
events by its fields and conditions, and the one route of logical decoding messages."""

from typing import Any, Callable, Dict, List, Optional, Tuple

from ..events import Event, MessageEvent, build_delete, build_insert, build_update, format_lsn
from ..conditions import Condition
from ..listener import Listener, RunningCalls
from ..operations import Operation
from .acknowledgement import Transaction
from .workers import Workers

__all__ = ["BATCH_SIZE", "Route", "MessageRoute", "describe_event", "unshaped_event"]

INSERT, UPDATE = Operation.INSERT, Operation.UPDATE

#: Events a max_parallel=1 listener gets per hand-off at most.
BATCH_SIZE = 256


class Route:
    """One attached listener: how its events are shaped and where they go."""

    def __init__(self, listener: Listener, since_lsn: int, workers: Workers) -> None:
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
        self.running_calls = listener.running_calls
        self.still_wanted = listener.is_registered

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
        conditions, or None. The rows are as for :func:`unshaped_event`."""
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


def unshaped_event(operation: Operation, table: str, lsn: int, txn: Transaction, old: Any, new: Any) -> Event:
    """The event every listener without fields or conditions gets: built once per change.

    ``new`` is a row for an INSERT or UPDATE, ``old`` one for a DELETE (and None or a
    row for an UPDATE): the operation says which, so their type is left open here.
    """
    if operation is INSERT:
        return build_insert(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, new)
    if operation is UPDATE:
        return build_update(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, old, new)
    return build_delete(table, lsn, txn.commit_lsn, txn.xid, txn.commit_time, old)


class MessageRoute:
    """The ``on_message`` callbacks: one worker, so messages keep their order."""

    def __init__(self, workers: Workers) -> None:
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
