"""What the Django and Flask integrations share.

- :class:`ListenerRegistry`: listeners declared with decorators at import time, before
  the settings (and so the client) exist; every client made from it gets them all.
- :func:`read_settings`: a framework's settings, named after the keyword arguments of
  :class:`~flash_wal.ClientConfig` and :class:`~flash_wal.drivers.wal_logical.DriverConfig`
  in upper case, to a ``ClientConfig``.
- :func:`run_until_stopped`: a client in the foreground until SIGTERM or SIGINT, then
  closed cleanly (the management command and the CLI command).
- :func:`autostart`: a client started inside a web process, at most once per process;
  a slot another process holds is a warning, not a crash.
"""

import atexit
import importlib
import logging
import os
import select
import signal
import threading
from typing import Any, Callable, List, Mapping, Optional, Tuple, TypeVar, Union

import attr

from ..client import Client, ClientConfig
from ..drivers.wal_logical import Driver, DriverConfig
from ..errors import ConfigurationError, FlashError, SlotInUseError
from ..listener import Listener, listener_for
from ..operations import Operation

__all__ = ["ListenerRegistry", "Settings", "read_settings", "setting_names", "run_until_stopped", "autostart"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: The setting that starts the client inside web processes; not a ClientConfig field.
AUTOSTART = "AUTOSTART"
_CLIENT_FIELDS = tuple(field.name for field in attr.fields(ClientConfig) if field.name != "driver")
_DRIVER_FIELDS = tuple(field.name for field in attr.fields(DriverConfig))
#: Callables that a settings file may give as a dotted path.
_CALLABLE_FIELDS = ("on_error",)


def setting_names() -> List[str]:
    """Every setting the integrations accept."""
    return sorted([name.upper() for name in _CLIENT_FIELDS + _DRIVER_FIELDS] + [AUTOSTART])


@attr.s(frozen=True, slots=True, kw_only=True)
class Settings:
    """A framework's flash_wal settings, read and checked."""

    client: ClientConfig = attr.ib()
    autostart: bool = attr.ib()


def read_settings(
    values: Mapping[str, Any], *, spell: Callable[[str], str], database_cnx: Callable[[], str]
) -> Settings:
    """Check and convert settings such as ``{"REPLICATION_SLOT": "blog", "DURABLE": True}``.

    ``spell`` writes a setting's name as the user wrote it, for messages (Django:
    ``FLASH_WAL['DURABLE']``, Flask: ``FLASH_WAL_DURABLE``); ``database_cnx`` gives the
    connection string when ``DATABASE_CNX`` is not set (it may raise ConfigurationError).
    """
    check_setting_names(values, spell)
    options = {name.lower(): value for name, value in values.items() if name != AUTOSTART}
    for name in _CALLABLE_FIELDS:
        if isinstance(options.get(name), str):
            options[name] = _import_callable(options[name], spell(name.upper()))
    autostart = values.get(AUTOSTART, False)
    if not isinstance(autostart, bool):
        raise ConfigurationError(f"{spell(AUTOSTART)} must be True or False, got {autostart!r}")
    if options.get("database_cnx") is None:
        options["database_cnx"] = database_cnx()
    try:
        driver = Driver(DriverConfig(**{name: options.pop(name) for name in _DRIVER_FIELDS if name in options}))
        client = ClientConfig(driver=driver, **options)
    except ConfigurationError as exc:
        raise ConfigurationError(_in_settings_terms(str(exc), spell)) from None
    return Settings(client=client, autostart=autostart)


def _in_settings_terms(message: str, spell: Callable[[str], str]) -> str:
    """"replication_slot must be ..." becomes "FLASH_WAL['REPLICATION_SLOT'] must be ..."."""
    for name in _CLIENT_FIELDS + _DRIVER_FIELDS:
        if message.startswith(name + " "):
            return spell(name.upper()) + message[len(name):]
    return f"flash_wal settings: {message}"


def check_setting_names(values: Mapping[str, Any], spell: Callable[[str], str]) -> None:
    """Raise ConfigurationError naming the valid settings if one is unknown."""
    valid = setting_names()
    unknown = sorted(str(name) for name in values if name not in valid)
    if unknown:
        raise ConfigurationError(
            f"unknown flash_wal setting{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(spell(name) for name in unknown)}; the settings are "
            f"{', '.join(valid)} (ClientConfig's and DriverConfig's arguments in upper case)"
        )


def _import_callable(path: str, setting: str) -> Callable[..., Any]:
    module_name, _, name = path.rpartition(".")
    try:
        value = getattr(importlib.import_module(module_name), name) if module_name else None
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{setting}: cannot import {path!r} ({exc})") from exc
    if not callable(value):
        raise ConfigurationError(f"{setting} must be a callable or the dotted path of one, got {path!r}")
    return value


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
        self._autostart_tried_pid = 0

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

    def _run_here(self, client: Optional[Client]) -> None:
        """Make ``client`` the one later declarations attach to (None: no client runs)."""
        with self._lock:
            self._client, self._client_pid = client, os.getpid()


def run_until_stopped(registry: ListenerRegistry, client: Client, announce: Callable[[str], None]) -> None:
    """Start ``client``, run it until SIGTERM or SIGINT, then close it.

    Must run in the main thread (signal handlers live there). A fatal error of the
    client closes it too and is raised; a signal is a normal end.
    """
    if threading.current_thread() is not threading.main_thread():
        raise FlashError("run_until_stopped() must run in the main thread, which receives signals")
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    # A signal only writes its number to the pipe (set_wakeup_fd); the handlers do
    # nothing themselves, so no code of ours runs at an arbitrary point of the main thread.
    previous_handlers = {number: signal.signal(number, _wake_only) for number in _STOP_SIGNALS}
    previous_wakeup = signal.set_wakeup_fd(wake_write)
    watcher = None
    try:
        client.start()  # a signal during start() waits in the pipe
        registry._run_here(client)
        config = client.driver.config
        tables = dict.fromkeys(str(listener.table) for listener in client.listeners)
        announce(
            f"flash_wal: streaming {', '.join(tables) or 'messages'}"
            f" (slot {config.replication_slot}, publication {config.publication_name});"
            " SIGTERM or Ctrl-C stops"
        )
        watcher = threading.Thread(
            target=_wake_when_done, args=(client, wake_write), name="flash_wal-wait", daemon=True
        )
        watcher.start()
        stopped_by = _wait_for_wakeup(wake_read)
        if stopped_by is not None:
            announce(f"flash_wal: {stopped_by.name} received, closing")
    finally:
        client.close()
        registry._run_here(None)
        if watcher is not None:
            watcher.join()
        signal.set_wakeup_fd(previous_wakeup)
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)
        os.close(wake_read)
        os.close(wake_write)
    client.wait(0)  # raises the fatal error that ended the run, if one did
    announce("flash_wal: closed")


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_CLIENT_DONE = 0  # not a signal number


def _wake_only(_signum: int, _frame: Any) -> None:
    pass


def _wake_when_done(client: Client, wake_write: int) -> None:
    try:
        client.wait()
    except BaseException:  # the main thread raises it again from client.wait(0)
        pass
    os.write(wake_write, bytes([_CLIENT_DONE]))


def _wait_for_wakeup(wake_read: int) -> Optional[signal.Signals]:
    """The stop signal received, or None once the client has ended by itself."""
    while True:
        select.select([wake_read], [], [])
        try:
            received = os.read(wake_read, 64)
        except BlockingIOError:
            continue
        for number in received:
            if number in _STOP_SIGNALS:
                return signal.Signals(number)
            if number == _CLIENT_DONE:
                return None


def autostart(registry: ListenerRegistry, make_client: Callable[[], Client], *, skip_because: Optional[str]) -> Optional[Client]:
    """Start the registry's client inside this (web) process, at most once per process.

    ``skip_because`` says why this process must not start it (an autoreloader's
    watcher process, a management command), or is None. When another process holds
    the slot, as with several web workers, this logs one WARNING and returns None.
    The client is closed at interpreter exit.
    """
    pid = os.getpid()
    with registry._lock:
        if registry._autostart_tried_pid == pid:
            return registry.client
        registry._autostart_tried_pid = pid
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
    registry._run_here(client)
    atexit.register(_close_at_exit, client, pid)
    logger.info("started automatically in process %d", pid)
    return client


def _close_at_exit(client: Client, pid: int) -> None:
    # A forked child inherits the parent's client, sockets and all: closing it there
    # would cut the parent's connections.
    if os.getpid() == pid:
        client.close()
