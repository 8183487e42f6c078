"""The interface between the client and a source of changes.

A driver owns everything server-side: connections, replication, the objects it creates
on the server. The client owns listeners and the :class:`~flash_wal.dispatcher.Dispatcher`
and calls the driver in this order: ``start`` once, ``listen`` whenever the set of
listeners changes while running, ``close`` once.
"""

import abc
from typing import Any, Callable, Dict, Sequence

from ..dispatcher import Dispatcher
from ..listener import Listener

__all__ = ["Driver"]


class Driver(abc.ABC):
    """A source of row changes for a :class:`~flash_wal.Client`."""

    @abc.abstractmethod
    def start(
        self,
        database_cnx: str,
        dispatcher: Dispatcher,
        listeners: Sequence[Listener],
        *,
        shutdown_timeout: float,
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        """Check the server, set it up and start streaming into ``dispatcher``.

        Returns once changes committed from now on will be delivered. Raises a
        :class:`~flash_wal.FlashError` and leaves nothing behind on failure. Errors
        after that go to ``on_fatal``, from the driver's own thread.
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

    def stats(self) -> Dict[str, Any]:
        """Driver-side figures for :meth:`flash_wal.Client.stats`."""
        return {}
