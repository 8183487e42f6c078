"""Listeners declared with decorators at import time, before the settings (and so the
client) of a Django project or a Flask app exist: :class:`ListenerRegistry`, the base
of ``flash_wal.contrib.django.flash`` and of the Flask extension."""

import contextlib
import os
import threading
from typing import Any, Callable, Iterator, List, Optional, Tuple, TypeVar, Union

from ..client import Client, ClientConfig
from ..errors import ConfigurationError
from ..listener import Listener, listener_for
from ..operations import Operation

__all__ = ["ListenerRegistry", "F"]

#: A decorated function, returned as it is.
F = TypeVar("F", bound=Callable[..., Any])


class ListenerRegistry:
    """Listeners declared before the client exists, with the decorators of
    :class:`~flash_wal.Client`; each client made by :meth:`make_client` gets them all,
    and one running in this process gets those declared later too."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._listeners: List[Listener] = []
        self._message_callbacks: List[Tuple[str, Callable[..., Any]]] = []
        self._client: Optional[Client] = None
        self._client_pid = 0

    @property
    def client(self) -> Optional[Client]:
        """The client running in this process (started by autostart or by the command), or None."""
        with self._lock:
            return self._client if self._client_pid == os.getpid() else None

    def on(
        self, table: str, operations: Union[Operation, str] = Operation.ALL, **listener_options: Any
    ) -> Callable[[F], F]:
        """Decorator: as :meth:`flash_wal.Client.on`."""

        def decorator(func: F) -> F:
            self.attach(listener_for(table, operations, func, **listener_options))
            return func

        return decorator

    def on_message(self, prefix: str) -> Callable[[F], F]:
        """Decorator: as :meth:`flash_wal.Client.on_message`."""
        if not isinstance(prefix, str):
            raise ConfigurationError(f"prefix must be a string, got {prefix!r}")

        def decorator(func: F) -> F:
            if not callable(func):
                raise ConfigurationError(f"callback must be callable, got {func!r}")
            with self._lock:
                self._message_callbacks.append((prefix, func))
                if self.client is not None:
                    self.client.on_message(prefix)(func)
            return func

        return decorator

    def attach(self, *listeners: Listener) -> None:
        """Add :class:`~flash_wal.Listener` objects."""
        with self._lock:
            for listener in listeners:
                if not isinstance(listener, Listener):
                    raise ConfigurationError(f"attach() takes Listener objects, got {listener!r}")
            if self.client is not None:
                self.client.attach(*listeners)
            self._listeners.extend(listeners)

    @property
    def listeners(self) -> List[Listener]:
        return list(self._listeners)

    def make_client(self, config: ClientConfig, *, no_listeners_hint: Optional[str] = None) -> Client:
        """A new client with every listener and message callback declared so far.

        With ``no_listeners_hint``, having none is a ConfigurationError saying that.
        """
        with self._lock:
            if no_listeners_hint is not None and not self._listeners and not self._message_callbacks:
                raise ConfigurationError(f"no listeners are declared: {no_listeners_hint}")
            client = Client(config)
            client.attach(*self._listeners)
            for prefix, func in self._message_callbacks:
                client.on_message(prefix)(func)
            return client

    def run_here(self, client: Optional[Client]) -> None:
        """Make ``client`` the one running in this process, which declarations made
        later attach to too (None: none runs). For the integrations' runners."""
        with self._lock:
            self._client, self._client_pid = client, os.getpid()

    @contextlib.contextmanager
    def running(self, client: Client) -> Iterator[Client]:
        """``client`` is the one running in this process while inside."""
        self.run_here(client)
        try:
            yield client
        finally:
            self.run_here(None)
