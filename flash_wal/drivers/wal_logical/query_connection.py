"""The driver's normal connection: set-up, attach, publication checks, stats.

One user at a time (:attr:`QueryConnection.lock`). Its session holds the slot's
advisory lock, taken by :mod:`.claim` at start, which keeps a second instance off the
slot; so when the server drops the connection (a restart), it is opened again *with*
that lock, or this client stops.
"""

import contextlib
import logging
import threading
from typing import Any, Callable, Iterator, Optional, Tuple

import psycopg2

from ...connection import cannot_connect, connect
from ...errors import SlotInUseError
from . import catalog
from .config import DriverConfig

__all__ = ["QueryConnection", "connect_for_setup"]

logger = logging.getLogger(__name__)


def connect_for_setup(dsn: str, setup_timeout: float) -> Any:
    """A normal connection whose statements wait for table locks ``setup_timeout`` at most."""
    try:
        conn = connect(dsn)
        # ALTER TABLE ... REPLICA IDENTITY waits for every transaction on the
        # table; better a clear error than a start() that hangs.
        conn.cursor().execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(setup_timeout * 1000)}ms",))
        return conn
    except psycopg2.OperationalError as exc:
        raise cannot_connect(dsn, exc) from exc


class QueryConnection:
    """See the module docstring. ``on_lost_slot(error)`` is called when another
    instance took the slot while this one was disconnected."""

    def __init__(self, dsn: str, config: DriverConfig, on_lost_slot: Callable[[SlotInUseError], None]) -> None:
        self.lock = threading.Lock()
        self._dsn = dsn
        self._config = config
        self._on_lost_slot = on_lost_slot
        self._conn: Any = None
        self._session: Optional[Tuple[int, Any]] = None  # its backend, which holds the slot's lock
        #: Set once another instance took the slot's lock while this one was disconnected.
        self.lost_slot: Optional[SlotInUseError] = None

    def open(self) -> Any:
        """Connect; return a cursor."""
        self._conn = connect_for_setup(self._dsn, self._config.setup_timeout)
        cursor = self._conn.cursor()
        self._session = catalog.session(cursor)
        return cursor

    @property
    def is_open(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def cursor(self) -> Any:
        """A cursor, the connection opened again (with the slot's lock) if the server
        dropped it. Call with :attr:`lock` held."""
        if self.lost_slot is not None:
            raise self.lost_slot
        if not self._conn.closed:
            cursor = self._conn.cursor()
            try:
                cursor.execute("SELECT 1")
                return cursor
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self._conn.close()
        self._conn = connect_for_setup(self._dsn, self._config.setup_timeout)
        cursor = self._conn.cursor()
        self._take_slot_lock_again(cursor)
        self._session = catalog.session(cursor)
        return cursor

    def plain_cursor(self) -> Any:
        """A cursor as the connection is, for clean-up after a failed start."""
        return self._conn.cursor()

    @contextlib.contextmanager
    def when_free(self, timeout: float) -> Iterator[Optional[Any]]:
        """A cursor, or None when another thread holds the connection past ``timeout``
        or it is closed; a server error ends the block quietly. Never reopened here:
        the replication thread does that before it reconnects."""
        if not self.lock.acquire(timeout=timeout):
            yield None
            return
        try:
            yield self._conn.cursor() if self.is_open else None
        except psycopg2.Error:
            pass  # the server is away; the replication thread is reconnecting
        finally:
            self.lock.release()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _take_slot_lock_again(self, cursor: Any) -> None:
        """The slot's lock went with the old session (a server restart): without it, a
        second instance could start on the slot. If one did meanwhile, this client stops:
        never two instances on one slot."""
        slot = self._config.replication_slot
        taken = catalog.wait_for_slot_lock(cursor, slot, 0)
        if not taken:
            if self._session is not None and catalog.slot_lock_holder(cursor, slot) == self._session:
                # The connection broke on this side only (a network failure): the server
                # has not noticed yet, and our previous session still holds the lock.
                logger.warning("ending this client's previous query connection (pid %d), which the server "
                               "still runs and which holds the lock on replication slot %s",
                               self._session[0], slot)
                cursor.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (self._session[0],))
            taken = catalog.wait_for_slot_lock(cursor, slot, self._config.slot_wait_timeout)
        if taken:
            logger.debug("took the lock on replication slot %s again", slot)
            return
        self.lost_slot = SlotInUseError(
            f"another instance took replication slot {slot!r} while this client was disconnected "
            "from the server (its lock on the slot went with the connection), so this client "
            "stops; give each instance its own replication_slot and publication_slot_prefix"
        )
        self.close()
        self._on_lost_slot(self.lost_slot)
        raise self.lost_slot
