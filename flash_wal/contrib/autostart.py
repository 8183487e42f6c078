"""A client started inside a web process (``AUTOSTART``), at most once per process;
a slot that another process holds is a warning, not a crash."""

import atexit
import logging
import os
import threading
import weakref
from typing import Callable, Optional

from ..client import Client
from ..errors import SlotInUseError
from .registry import ListenerRegistry

__all__ = ["autostart"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
#: The process in which each registry last tried to start, so that it tries once there.
_tried_in_pid: "weakref.WeakKeyDictionary[ListenerRegistry, int]" = weakref.WeakKeyDictionary()


def autostart(registry: ListenerRegistry, make_client: Callable[[], Client], *, skip_because: Optional[str]) -> Optional[Client]:
    """Start the registry's client inside this (web) process, at most once per process.

    ``skip_because`` says why this process must not start it (an autoreloader's
    watcher process, a management command), or is None. When another process holds
    the slot, as with several web workers, this logs one WARNING and returns None.
    The client is closed at interpreter exit.
    """
    pid = os.getpid()
    with _lock:
        if _tried_in_pid.get(registry) == pid:
            return registry.client
        _tried_in_pid[registry] = pid
    if skip_because is not None:
        logger.info("not starting automatically: %s", skip_because)
        return None
    client = make_client()
    try:
        client.start()
    except SlotInUseError as exc:
        logger.warning(
            "not listening in this process (pid %d): %s. With several web workers one of "
            "them listens and this is expected; to listen in a process of its own, turn "
            "AUTOSTART off and run the flash_wal command", pid, exc,
        )
        return None
    registry.run_here(client)
    atexit.register(_close_at_exit, client, pid)
    logger.info("started automatically in process %d", pid)
    return client


def _close_at_exit(client: Client, pid: int) -> None:
    # A forked child inherits the parent's client, sockets and all: closing it there
    # would cut the parent's connections.
    if os.getpid() == pid:
        client.close()
