"""The client: listeners in, callbacks called, one driver doing the server work."""

import enum
import logging
import threading
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Type, TypeVar, Union

import attr

from .backfill import DEFAULT_CHUNK_SIZE, Backfill
from .connection import mask_dsn
from .dispatcher import Dispatcher, ErrorHandler, Executor, Task, worker_threads
from .drivers.base import Driver
from .errors import ConfigurationError, FlashError
from .listener import Listener, listener_for
from .operations import Operation
from .validators import config_from, positive_int, seconds

__all__ = ["Client", "ClientConfig", "ClientState"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _default_driver() -> Driver:
    from .drivers.wal_logical import Driver as WalLogicalDriver

    return WalLogicalDriver()


def _check_optional_callable(_instance: Any, attribute: "attr.Attribute[Any]", value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigurationError(f"{attribute.name} must be callable(exc, event) or None; got {value!r}")


def _check_dsn(_instance: Any, attribute: "attr.Attribute[str]", value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            "database_cnx must be a connection string such as "
            "'postgresql://user:password@localhost:5432/dbname'"
        )


def _check_driver(_instance: Any, attribute: "attr.Attribute[Driver]", value: Any) -> None:
    if not isinstance(value, Driver):
        raise ConfigurationError(f"driver must be a flash_wal Driver, got {value!r}")


class ClientState(enum.Enum):
    """Where a client is in its life; :attr:`reported` is what ``stats()["state"]`` says."""

    NEW = "new"
    STARTING = "starting"
    STREAMING = "streaming"
    CLOSING = "closing"
    CLOSED = "closed"

    @property
    def reported(self) -> str:
        # Not started yet counts as starting; once close() began, it is closed for users.
        if self is ClientState.NEW:
            return ClientState.STARTING.value
        if self is ClientState.CLOSING:
            return ClientState.CLOSED.value
        return str(self.value)


@attr.s(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """How a :class:`Client` connects and behaves."""

    #: libpq connection string or URI. Connecting gives up after 10 s unless it sets
    #: ``connect_timeout``; passwords are masked in messages and logs.
    database_cnx: str = attr.ib(validator=_check_dsn, repr=lambda dsn: repr(mask_dsn(dsn)))
    #: The source of changes: a ``flash_wal.drivers.wal_logical.Driver``. A driver
    #: serves one client.
    driver: Driver = attr.ib(
        factory=_default_driver, validator=_check_driver, metadata={"shown_default": "``Driver()``"}
    )
    #: Seconds ``close()`` waits for callbacks still running.
    shutdown_timeout: float = attr.ib(default=10.0, validator=seconds(0))
    #: ``on_error(exc, event)`` is called when a callback raises (after the failure is
    #: logged); an exception it raises is logged and ignored.
    on_error: Optional[ErrorHandler] = attr.ib(default=None, validator=_check_optional_callable)
    #: Events handed to callbacks and not finished yet, at most; past it flash_wal
    #: stops reading from the server (keeping the connection alive) until callbacks
    #: catch up.
    max_queued_events: int = attr.ib(default=10_000, validator=positive_int)
    #: Bytes of changes (as the server sent them) held between reading and callbacks
    #: that have not finished, at most: past it reading pauses as for
    #: ``max_queued_events``, so a backlog of large rows cannot fill memory. A single
    #: change larger than this is still delivered, alone.
    max_queued_bytes: int = attr.ib(default=64 * 1024 * 1024, validator=positive_int)


class Client:
    """Streams row changes from PostgreSQL to the callbacks of attached listeners.

    ``Client(ClientConfig(database_cnx=...))`` or, the same, ``Client(database_cnx=...)``.
    """

    def __init__(self, config: Optional[ClientConfig] = None, **kwargs: Any) -> None:
        self.config = config = config_from(ClientConfig, config, kwargs)
        self.driver = config.driver
        self._lock = threading.RLock()
        self._listeners: List[Listener] = []
        self._dispatcher = Dispatcher(
            on_error=config.on_error, max_queued_events=config.max_queued_events,
            max_queued_bytes=config.max_queued_bytes, executor_for=self._executor_for,
        )
        self._state = ClientState.NEW
        self._done = threading.Event()
        self._closed = threading.Event()
        self._fatal: Optional[BaseException] = None
        self._backfills: List[Backfill] = []  # every one of this client's life
        self._backfill_of: Dict[Listener, Backfill] = {}
        self._backfill_ordinals: Dict[Listener, int] = {}

    def _executor_for(self, listener: Listener, run: Callable[[Task], None]) -> Executor:
        """Where an attached listener's callbacks run: worker threads (``flash_wal.aio``
        runs coroutine callbacks on its event loop instead)."""
        return worker_threads(listener, run)

    # --- listeners --------------------------------------------------------------------

    def attach(self, *listeners: Listener) -> None:
        """Attach listeners, before or after start(); after start they take effect at once."""
        with self._lock:
            for listener in listeners:
                if not isinstance(listener, Listener):
                    raise ConfigurationError(f"attach() takes Listener objects, got {listener!r}")
                if listener in self._listeners:
                    raise ConfigurationError(f"{listener!r} is already attached")
            self._check_open()
            wanted = self._listeners + list(listeners)
            since_lsn = self.driver.listen(wanted) if self._state is ClientState.STREAMING else 0
            for listener in listeners:
                self._dispatcher.attach(listener, since_lsn)
                listener.operations_watchers.append(self._operations_changed)
            self._listeners = wanted
            if self._state is ClientState.STREAMING:
                for listener in listeners:
                    if listener.config.backfill:
                        self.backfill(listener, DEFAULT_CHUNK_SIZE)

    def detach(self, *listeners: Listener) -> None:
        """Detach listeners; their callbacks are not called again once this returns.

        A call of one running in another thread is waited for; called from a callback
        of a detached listener, this does not wait for that call.
        """
        with self._lock:
            for listener in listeners:
                if listener not in self._listeners:
                    raise ConfigurationError(f"{listener!r} is not attached")
            remaining = [l for l in self._listeners if l not in listeners]
            for listener in listeners:
                running = self._backfill_of.pop(listener, None)
                if running is not None:
                    running.cancel()
                self._dispatcher.detach(listener)
                listener.operations_watchers.remove(self._operations_changed)
            self._listeners = remaining
            if self._state is ClientState.STREAMING:
                self.driver.listen(remaining)
        # Outside the lock: a running callback may attach or detach too.
        for listener in listeners:
            listener.wait_for_running_calls()

    def _operations_changed(self) -> None:
        """An attached listener registered or unregistered a callback: the server
        publishes only the operations listeners want (see the driver), so it is told."""
        with self._lock:
            if self._state is ClientState.STREAMING:
                self.driver.listen(self._listeners)

    def on(
        self, table: str, operations: Union[Operation, str] = Operation.ALL, **listener_options: Any
    ) -> Callable[[F], F]:
        """Decorator: listen to ``table`` and call the function for ``operations``.

        Extra keyword arguments (fields, conditions, max_parallel) configure the
        listener created for it.
        """

        def decorator(func: F) -> F:
            self.attach(listener_for(table, operations, func, **listener_options))
            return func

        return decorator

    def on_message(self, prefix: str) -> Callable[[F], F]:
        """Decorator: call the function with a :class:`~flash_wal.MessageEvent` for every
        logical decoding message (``pg_logical_emit_message``) whose prefix starts with
        ``prefix`` (PostgreSQL 14+). Transactional messages arrive only if their
        transaction commits; others at once. Message callbacks run one at a time, in
        the order the server sent the messages.
        """
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a string, got {prefix!r}")

        def decorator(func: F) -> F:
            if not callable(func):
                raise ConfigurationError(f"callback must be callable, got {func!r}")
            self._check_open()
            self._dispatcher.on_message(prefix, func)
            return func

        return decorator

    @property
    def listeners(self) -> List[Listener]:
        return list(self._listeners)

    # --- backfill ---------------------------------------------------------------------

    def backfill(self, listener: Listener, chunk_size: int = 1000) -> Backfill:
        """Deliver the rows already in ``listener``'s table as ReadEvents,
        merged into the stream while changes keep coming; returns at once.

        Rows are read in key order, ``chunk_size`` at a time, one short transaction per
        chunk. While that listener's backfill runs, this returns it rather than starting
        another. A table without a key is a ConfigurationError.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be a positive int, got {chunk_size!r}")
        with self._lock:
            if self._state is not ClientState.STREAMING:
                raise FlashError(f"the client is {self._state.reported}: backfill() works once start() returned")
            if listener not in self._listeners:
                raise ConfigurationError(f"attach {listener!r} before backfilling it")
            running = self._backfill_of.get(listener)
            if running is not None and running.state == "running":
                return running
            ordinal = self._backfill_ordinals.get(listener)
            if ordinal is None:
                ordinal = 1 + sum(1 for other in self._backfill_ordinals if other.table == listener.table)
            backfill = Backfill(str(listener.table), chunk_size)
            self.driver.backfill(listener, backfill, ordinal)
            self._backfill_ordinals[listener] = ordinal
            self._backfill_of[listener] = backfill
            self._backfills.append(backfill)
            return backfill

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Set up the server and start streaming; returns once changes are streaming."""
        with self._lock:
            if self._state is not ClientState.NEW:
                raise FlashError(f"the client is {self._state.value}; a Client starts once")
            self._state = ClientState.STARTING
            try:
                self.driver.start(
                    self.config.database_cnx,
                    self._dispatcher,
                    list(self._listeners),
                    shutdown_timeout=self.config.shutdown_timeout,
                    on_fatal=self._on_fatal,
                    on_tables_gone=self._tables_gone,
                )
            except BaseException:
                self._state = ClientState.CLOSED
                self._dispatcher.close()
                self._done.set()
                raise
            self._state = ClientState.STREAMING
            try:
                for listener in self._listeners:
                    if listener.config.backfill:
                        self.backfill(listener, DEFAULT_CHUNK_SIZE)
            except BaseException:
                self.close()
                raise

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until close() or a fatal error, which is re-raised.

        Returns False if ``timeout`` seconds passed first.
        """
        finished = self._done.wait(timeout)
        if self._fatal is not None:
            raise self._fatal
        return finished

    def close(self) -> None:
        """Stop streaming, drain in-flight callbacks within shutdown_timeout, clean up.

        Called from a callback, it returns at once: no other callback starts, and the
        client finishes closing as soon as that callback has returned.
        """
        with self._lock:
            if self._state in (ClientState.NEW, ClientState.CLOSED):
                self._state = ClientState.CLOSED
                self._done.set()
                self._closed.set()
                return
            closing = self._state is ClientState.CLOSING
            self._state = ClientState.CLOSING
        if closing:  # another thread is closing it: wait for that, unless in a callback
            if not self._dispatcher.in_callback():
                self._closed.wait()
            return
        if self._dispatcher.in_callback():
            self._dispatcher.close()
            self.driver.stop_soon()
            threading.Thread(target=self._finish_closing, name="flash_wal-close", daemon=True).start()
            return
        self._finish_closing()

    def _finish_closing(self) -> None:
        for backfill in self._backfills:
            backfill.cancel()
        try:
            if not self.driver.close():
                logger.warning(
                    "closed with callbacks still running after shutdown_timeout=%.1f s",
                    self.config.shutdown_timeout,
                )
        finally:
            self._dispatcher.close()
            self._state = ClientState.CLOSED
            self._done.set()
            self._closed.set()
            logger.info(
                "closed: %d events delivered, %d callbacks failed",
                self._dispatcher.events_delivered, self._dispatcher.callbacks_failed,
            )

    def stats(self) -> Dict[str, Any]:
        """Figures about delivery; see the API documentation for the keys."""
        dispatcher = self._dispatcher
        figures: Dict[str, Any] = {
            "events_delivered": dispatcher.events_delivered,
            "callbacks_failed": dispatcher.callbacks_failed,
            "last_acked_lsn": dispatcher.acked_lsn,
            "lag_bytes": None,
            "queue_depth": dispatcher.queued_events,
            "queued_bytes": dispatcher.queued_bytes,
            "reconnects": 0,
            "state": ClientState.CLOSED.value if self._fatal else self._state.reported,
            "backfills": [backfill.stats() for backfill in self._backfills],
        }
        if self._state is ClientState.STREAMING and not self._fatal:
            try:
                figures.update(self.driver.stats())
            except Exception:  # stats() never raises: what it cannot read is None
                logger.debug("driver figures unavailable", exc_info=True)
        return figures

    def _tables_gone(self, tables: Any) -> None:
        """Detach the listeners of tables dropped or renamed while streaming."""
        with self._lock:
            if self._state is not ClientState.STREAMING:
                return
            tables = set(tables)
            gone = [listener for listener in self._listeners if listener.table in tables]
            if gone:
                self.detach(*gone)

    def _on_fatal(self, exc: BaseException) -> None:
        logger.error("replication failed: %s", exc)
        self._fatal = exc
        self._done.set()

    def _check_open(self) -> None:
        if self._state in (ClientState.CLOSING, ClientState.CLOSED):
            raise FlashError("the client is closed")

    def __enter__(self) -> "Client":
        if self._state is ClientState.NEW:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self._state.value} listeners={len(self._listeners)}>"
