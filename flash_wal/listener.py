"""Listeners: what a user wants to hear about one table, and the callbacks to call.

A listener is plain configuration plus a callback registry. It is safe to change from
any thread while the client runs: the registry is copied on write, so the dispatcher
reads a consistent snapshot without taking a lock per event.
"""

import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

import attr

from .conditions import Condition
from .errors import ConfigurationError
from .operations import Operation
from .table_name import TableName, parse_table_name
from .validators import config_from, instance_of

__all__ = ["Condition", "ListenerConfig", "Listener"]

Callback = Callable[[Any], Any]
F = TypeVar("F", bound=Callback)

#: Worker threads of a ``max_parallel=-1`` listener at most: a thread per waiting task
#: would grow without bound under a burst of slow callbacks.
UNBOUNDED_WORKERS = 32


def _to_tuple(items: Optional[Iterable[Any]]) -> Tuple[Any, ...]:
    if items is None:
        return ()
    if isinstance(items, (str, bytes)):
        raise ConfigurationError(f"expected a list, not the string {items!r}")
    return tuple(items)


def _check_max_parallel(_instance: Any, _attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not (value >= 1 or value == -1):
        raise ConfigurationError(
            f"max_parallel must be a positive integer, or -1 for as many as {UNBOUNDED_WORKERS}; got {value!r}"
        )


def _check_column_names(_instance: Any, attribute: Any, value: Tuple[Any, ...]) -> None:
    for field in value:
        if not isinstance(field, str) or not field:
            raise ConfigurationError(f"{attribute.name} must be column names (strings), got {field!r}")
    if len(set(value)) != len(value):
        raise ConfigurationError(f"{attribute.name} lists a column twice: {list(value)!r}")


def _check_conditions(_instance: Any, _attribute: Any, value: Tuple[Any, ...]) -> None:
    for condition in value:
        if not isinstance(condition, Condition):
            raise ConfigurationError(
                f"conditions must be Condition(column, value, op) objects, got {condition!r}"
            )


@attr.s(frozen=True, slots=True)
class ListenerConfig:
    """What to listen to: a table, optionally some of its columns and rows."""

    #: The table: ``"posts"`` (in ``public``), ``"schema.table"``, quoted parts as in
    #: SQL (``'"Stats"."Name"'``); unquoted names are folded to lower case.
    table: str = attr.ib(validator=instance_of(str))
    #: Columns to deliver, in ``new`` and ``old``; an UPDATE that changes none of them
    #: produces no event. Empty: every column.
    fields: Tuple[str, ...] = attr.ib(
        default=(), converter=_to_tuple, validator=_check_column_names, metadata={"shown_default": "``()`` (all)"}
    )
    #: ``Condition(column, value, op)`` objects, all of which must hold (``op`` eq,
    #: neq, lt, lte, gt, gte, in or not_in; ``eq None`` means IS NULL). On UPDATE, a
    #: row that starts to match arrives as an ``InsertEvent``, one that stops matching
    #: as a ``DeleteEvent``.
    conditions: Tuple[Condition, ...] = attr.ib(
        default=(), converter=_to_tuple, validator=_check_conditions, metadata={"shown_default": "``()`` (none)"}
    )
    #: Callbacks of this listener running at once: 1 runs them one at a time in commit
    #: order, N > 1 up to N at once (a worker thread each), ``-1`` as many as 32.
    max_parallel: int = attr.ib(default=1, validator=_check_max_parallel)
    #: The columns that identify a row, in order: every row event's ``key`` holds their
    #: values. Empty: the table's primary key, else its replica identity index, else none.
    primary_key: Tuple[str, ...] = attr.ib(
        default=(), converter=_to_tuple, validator=_check_column_names,
        metadata={"shown_default": "``()`` (the table's)"},
    )
    #: Read the rows already in the table when the listener is attached to a streaming
    #: client (or when the client starts), as ReadEvents merged
    #: into the stream, in chunks of ``DEFAULT_CHUNK_SIZE`` rows: see ``Client.backfill``.
    backfill: bool = attr.ib(default=False, validator=instance_of(bool))
    table_name: TableName = attr.ib(init=False, eq=False, repr=False)

    @table_name.default
    def _parse_table(self) -> TableName:
        return parse_table_name(self.table)


class RunningCalls:
    """Which callback each worker thread is calling, so that ``off`` and ``detach`` can
    wait for a call that started before them.

    A worker announces a call in :attr:`by_thread` and only then checks that the
    callback is still wanted; ``off``/``detach`` first make it unwanted and only then
    look at the announced calls. Whichever comes second sees the other's change, so once
    they return no call of the callback is running or can start.
    """

    def __init__(self) -> None:
        #: thread ident -> the callback it is calling, or None. Written by that thread only.
        self.by_thread: Dict[int, Optional[Callback]] = {}
        #: How many threads wait in wait_until_finished: workers notify only then.
        self.waiters = 0
        self._finished = threading.Condition()

    def notify_finished(self) -> None:
        with self._finished:
            self._finished.notify_all()

    def wait_until_finished(self, matches: Callable[[Callback], bool]) -> None:
        """Wait until no other thread is calling a callback for which ``matches`` is
        true. The calling thread's own call is not waited for: off() or detach() from a
        callback returns at once instead of waiting for itself."""
        me = threading.get_ident()
        with self._finished:
            self.waiters += 1
            try:
                while any(
                    callback is not None and ident != me and matches(callback)
                    for ident, callback in list(self.by_thread.items())
                ):
                    self._finished.wait()
            finally:
                self.waiters -= 1


class Listener:
    """Callbacks for the changes of one table.

    ``Listener(ListenerConfig(table=...))`` or, the same, ``Listener(table=...)``.
    """

    def __init__(self, config: Optional[ListenerConfig] = None, **kwargs: Any) -> None:
        self.config = config = config_from(ListenerConfig, config, kwargs)
        self._lock = threading.Lock()
        self._registrations: Dict[Callback, Operation] = {}
        # op atom -> callbacks; replaced as a whole on every change (copy on write).
        self._by_operation: Dict[Operation, Tuple[Callback, ...]] = {}
        self._operations = Operation(0)
        self.running_calls = RunningCalls()  # kept by the dispatcher's workers
        #: The conditions in force: ``config.conditions`` with their values typed as
        #: their columns by the driver at ``start()`` or ``attach`` (``"10"`` for an
        #: int column becomes 10), which the dispatcher's route of this listener checks.
        self.conditions: Tuple[Condition, ...] = config.conditions
        #: Called, outside the lock, when ``operations`` changes: a client this listener
        #: is attached to makes the server publish what it now wants.
        self.operations_watchers: List[Callable[[], None]] = []

    @property
    def table(self) -> TableName:
        return self.config.table_name

    @property
    def operations(self) -> Operation:
        """The operations at least one callback is registered for."""
        return self._operations

    def on(
        self, operations: Union[Operation, str], callback: Optional[F] = None
    ) -> Union[F, Callable[[F], F]]:
        """Register ``callback`` for ``operations``; without a callback, a decorator.

        Registering the same callback again adds the new operations to it.
        """
        operations = _as_operation(operations)
        if callback is None:
            def decorator(func: F) -> F:
                self._register(operations, func)
                return func
            return decorator
        self._register(operations, callback)
        return callback

    def off(self, callback: Callback) -> None:
        """Unregister ``callback`` for all its operations.

        Once this returns the callback is not called again: a call of it running in
        another thread is waited for (called from the callback itself, this returns at
        once).
        """
        with self._lock:
            if self._registrations.pop(callback, None) is None:
                raise ConfigurationError(f"{callback!r} is not registered on {self!r}")
            before = self._rebuild()
        self._tell_watchers(before)
        self.running_calls.wait_until_finished(lambda running: running == callback)

    def is_registered(self, callback: Callback) -> bool:
        return callback in self._registrations

    def wait_for_running_calls(self) -> None:
        """Wait until no callback of this listener runs in another thread (after detach)."""
        self.running_calls.wait_until_finished(lambda running: True)

    def callbacks_for(self, operation: Operation) -> Tuple[Callback, ...]:
        """The callbacks registered for one operation, in registration order."""
        return self._by_operation.get(operation, ())

    def _register(self, operations: Operation, callback: Callback) -> None:
        if not callable(callback):
            raise ConfigurationError(f"callback must be callable, got {callback!r}")
        with self._lock:
            self._registrations[callback] = self._registrations.get(callback, Operation(0)) | operations
            before = self._rebuild()
        self._tell_watchers(before)

    def _tell_watchers(self, before: Operation) -> None:
        if self._operations != before:
            for watcher in list(self.operations_watchers):
                watcher()

    def _rebuild(self) -> Operation:
        """Returns the operations as they were before."""
        before = self._operations
        by_operation: Dict[Operation, Tuple[Callback, ...]] = {}
        for op in (Operation.ALL | Operation.READ).atoms():
            by_operation[op] = tuple(cb for cb, ops in self._registrations.items() if ops & op)
        self._by_operation = by_operation
        self._operations = Operation(sum(op for op, cbs in by_operation.items() if cbs))
        return before

    def __repr__(self) -> str:
        return f"<Listener {self.config.table!r} fields={list(self.config.fields)!r}>"


def listener_for(
    table: str, operations: Union[Operation, str], callback: Callback, **listener_options: Any
) -> Listener:
    """A listener on ``table`` calling ``callback`` for ``operations``: what the ``on``
    decorators of the client and of the framework integrations attach."""
    listener = Listener(ListenerConfig(table=table, **listener_options))
    listener.on(operations, callback)
    return listener


def _as_operation(operations: Union[Operation, str, Sequence[str]]) -> Operation:
    if isinstance(operations, Operation):
        result = operations
    elif isinstance(operations, str):
        result = Operation.parse(operations)
    else:
        raise ConfigurationError(
            f"operations must be an Operation such as Operation.INSERT | Operation.UPDATE, "
            f"got {operations!r}"
        )
    if not result:
        raise ConfigurationError("register for at least one operation")
    return result
