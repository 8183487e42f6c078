"""The interfaces between the client and a source of changes.

A driver owns everything server-side: connections, replication, the objects it creates
on the server. The client owns listeners and the sink that the driver writes changes
to (a :class:`Sink`: the client's dispatcher), and calls the driver in this order:
``start`` once, ``listen`` whenever the set of listeners changes while running,
``close`` once.
"""

import abc
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

from ..errors import ConfigurationError
from ..listener import Listener
from ..operations import Operation
from ..table_name import TableName

__all__ = ["Driver", "Sink"]


class Sink(abc.ABC):
    """Where a driver's replication thread puts what it reads, and learns what it may
    acknowledge. Only that thread calls the methods that take a transaction."""

    #: The newest position up to which every transaction's callbacks have returned.
    acked_lsn: int

    @abc.abstractmethod
    def wants(self, table: TableName) -> bool:
        """Whether changes of ``table`` have any listener now (False: skip decoding them)."""

    @property
    @abc.abstractmethod
    def wants_messages(self) -> bool:
        """Whether logical decoding messages have any callback."""

    def table_key(self, table: TableName, columns: Sequence[str]) -> None:
        """The columns that identify a row of ``table`` by default (its primary key's,
        else its replica identity index's; empty: none), known before its first change
        of a session and again after each schema change. Events' ``key`` follows it."""

    @abc.abstractmethod
    def begin(self, commit_lsn: int, xid: Optional[int], commit_time: Any) -> Any:
        """A transaction starts; returns the handle the other calls take."""

    @abc.abstractmethod
    def change(self, txn: Any, operation: Operation, table: TableName, lsn: int,
               old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]], size: int = 0) -> None:
        """An INSERT, UPDATE or DELETE of ``txn``: the old and new rows, decoded;
        ``size``, the bytes of the message they came in (what ``max_queued_bytes`` counts)."""

    @abc.abstractmethod
    def truncate(self, txn: Any, table: TableName, lsn: int, cascade: bool, restart_identity: bool) -> None:
        """A TRUNCATE of one table of ``txn``."""

    @abc.abstractmethod
    def message(self, txn: Any, event: Any) -> None:
        """A logical decoding message."""

    @abc.abstractmethod
    def start_merge(self, listener: Listener, merge: Any) -> None:
        """A backfill of ``listener`` begins (``merge``: a :class:`flash_wal.backfill.Merge`):
        note the keys its table's changes touch, and deliver its chunks' rows where the
        stream reaches their watermarks (messages with the prefix
        :data:`flash_wal.backfill.WATERMARK_PREFIX`). Any thread."""

    @abc.abstractmethod
    def end_merge(self, merge: Any) -> None:
        """That backfill has ended. Any thread."""

    @abc.abstractmethod
    def acknowledged(self, txn: Any) -> bool:
        """Whether ``txn`` is done and acknowledged (its callbacks, and those of every
        transaction before it, returned). Any thread."""

    @abc.abstractmethod
    def commit(self, txn: Any, end_lsn: int) -> None:
        """``txn`` was received whole; acknowledge it at ``end_lsn`` once it is done."""

    @abc.abstractmethod
    def abandon(self, txn: Any) -> None:
        """``txn`` will not be received whole: never acknowledge it, nor wait for it."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Hand what is batched to the callbacks (the stream went quiet)."""

    @abc.abstractmethod
    def has_room(self) -> bool:
        """False while the callbacks are too far behind to read more."""

    @abc.abstractmethod
    def wait_for_room(self, timeout: float) -> bool:
        """Wait until :meth:`has_room`, or until callbacks finish any work; False on timeout."""

    @abc.abstractmethod
    def wake(self) -> None:
        """Wake a thread waiting in :meth:`wait_for_room` or :meth:`drain`."""

    @abc.abstractmethod
    def drain(self, timeout: Optional[float]) -> bool:
        """Wait until every callback handed work has returned; False on timeout."""

    @property
    @abc.abstractmethod
    def settled(self) -> bool:
        """Whether every transaction begun has been acknowledged."""

    @property
    @abc.abstractmethod
    def queued_events(self) -> int:
        """Events handed to callbacks and not finished."""

    @property
    def queued_bytes(self) -> int:
        """Bytes of the changes behind :attr:`queued_events` (0 if not counted)."""
        return 0

    #: Called, from any thread and without blocking, whenever acked_lsn moves.
    on_acknowledged: Optional[Callable[[], None]]

    def conditions_typed(self, listeners: Sequence[Listener]) -> None:
        """The driver has typed these listeners' ``conditions`` (see
        :attr:`flash_wal.Listener.conditions`): check them from now on. Called before
        any change for them is written."""


class Driver(abc.ABC):
    """A source of row changes for a :class:`~flash_wal.Client`."""

    @abc.abstractmethod
    def start(
        self,
        database_cnx: str,
        sink: Sink,
        listeners: Sequence[Listener],
        *,
        shutdown_timeout: float,
        on_fatal: Callable[[BaseException], None],
        on_tables_gone: Callable[[Iterable[TableName]], None],
    ) -> None:
        """Check the server, set it up and start streaming into ``sink``.

        Returns once changes committed from now on will be delivered. Raises a
        :class:`~flash_wal.FlashError` and leaves nothing behind on failure. Errors
        after that go to ``on_fatal``, from the driver's own thread; tables that were
        dropped or renamed while streaming go to ``on_tables_gone``, likewise.
        """

    @abc.abstractmethod
    def listen(self, listeners: Sequence[Listener]) -> int:
        """Make the server send changes for exactly these listeners' tables.

        Called while streaming; raises ConfigurationError for a listener that cannot
        be served. Returns the WAL position from which the new set is in force:
        transactions committed after it are complete for every listener.
        """

    @abc.abstractmethod
    def close(self) -> bool:
        """Stop streaming, drain callbacks, remove what is not meant to outlive us.

        Returns False when callbacks were still running at the shutdown timeout.
        """

    def backfill(self, listener: Listener, backfill: Any, ordinal: int) -> None:
        """Start reading ``listener``'s table into ``backfill`` (a :class:`flash_wal.Backfill`)
        while streaming; raise ConfigurationError at once for a table that cannot be
        backfilled. ``ordinal`` tells apart backfilling listeners of one table (their
        progress, for a durable driver)."""
        raise ConfigurationError(f"the {type(self).__name__} driver cannot backfill")

    def stop_soon(self) -> None:
        """Ask the driver to stop reading, from any thread, without waiting; ``close``
        does the rest."""

    def stats(self) -> Dict[str, Any]:
        """Driver-side figures for :meth:`flash_wal.Client.stats`; never blocks long."""
        return {}
