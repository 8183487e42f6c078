"""flash_wal: react to every row change in PostgreSQL, from Python.

A background thread reads PostgreSQL's logical replication stream (the built-in
``pgoutput`` plugin), turns each change into a typed event and calls the callbacks
that listeners registered for it.
"""

from .client import Client, ClientConfig
from .errors import ConfigurationError, FlashError, ProtocolError, ReplicationError
from .backfill import Backfill
from .events import DeleteEvent, Event, InsertEvent, MessageEvent, ReadEvent, TruncateEvent, UpdateEvent
from .listener import Condition, Listener, ListenerConfig
from .operations import Operation
from .sentinels import UNCHANGED_TOAST

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ClientConfig",
    "Listener",
    "ListenerConfig",
    "Condition",
    "Operation",
    "Event",
    "InsertEvent",
    "UpdateEvent",
    "DeleteEvent",
    "TruncateEvent",
    "ReadEvent",
    "MessageEvent",
    "Backfill",
    "UNCHANGED_TOAST",
    "FlashError",
    "ConfigurationError",
    "ProtocolError",
    "ReplicationError",
]
