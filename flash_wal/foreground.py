"""A client in the foreground of a process, until SIGTERM or SIGINT; its log on stderr.

The one runner of every command that runs a client until it is told to stop:
``flash-wal listen`` and ``flash-wal demo``, ``python manage.py flash_wal`` and
``flask flash-wal run``.

- :class:`Foreground`: while open, SIGTERM and SIGINT ask the main thread to stop
  instead of killing the process; :meth:`Foreground.run` sleeps until then, or until
  the client ends (its fatal error raised), or until the command's own reason to stop.
- :func:`run_until_stopped`: start a client, run it so, close it.
- :func:`stderr_logging`: the ``flash_wal`` logger on stderr, for ``-v``.
"""

import contextlib
import logging
import os
import select
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Union

from .errors import FlashError
from .waker import Waker

if TYPE_CHECKING:  # the command line imports this module before it needs a client
    from .client import Client

__all__ = ["Foreground", "StopReason", "run_until_stopped", "stderr_logging", "STOP_SIGNALS"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: Why :meth:`Foreground.run` returned: the stop signal, the reason that ``stop_when``
#: gave, or None when the client ended without an error (closed by one of its callbacks).
StopReason = Union[signal.Signals, str, None]


class Foreground:
    """SIGTERM and SIGINT, while this is open, ask the main thread to stop.

    A signal only writes its number to a :class:`~flash_wal.waker.Waker`
    (``signal.set_wakeup_fd``), which :meth:`wait` reads: no code of the command runs
    at an arbitrary point of the main thread, and a signal that comes while the main
    thread is busy (starting a server or a client) waits there until it looks.
    A signal after the first, or after :meth:`stopping`, stops nothing sooner: the
    command is cleaning up, and must leave nothing behind. It writes ``note`` (if
    any) on stderr, so that the user knows that the signal was heard.
    """

    def __init__(self, note: Optional[str] = None) -> None:
        #: The first stop signal that :meth:`wait` read, or None.
        self.received: Optional[signal.Signals] = None
        self._note = note.encode() if note else b""
        self._stopping = False
        self._handled = 0
        self._waker: Optional[Waker] = None
        self._previous_handlers: Dict[int, Any] = {}
        self._previous_wakeup_fd = -1

    def __enter__(self) -> "Foreground":
        if threading.current_thread() is not threading.main_thread():
            raise FlashError("a client in the foreground must run in the main thread, which receives signals")
        self._waker = Waker()
        # The wakeup descriptor first: a signal between the two calls is then not lost.
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._waker.write_fd)
        self._previous_handlers = {number: signal.signal(number, self._handle) for number in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers.clear()
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        if self._waker is not None:
            self._waker.close()  # a late wake() from a watcher thread is then a no-op
            self._waker = None

    def _handle(self, _signum: int, _frame: Optional[FrameType]) -> None:
        # The signal's number is in the waker already; this only acknowledges one
        # that cannot stop anything sooner.
        self._handled += 1
        if self._note and (self._handled > 1 or self._stopping):
            try:
                os.write(2, self._note)  # no locks in a signal handler: not sys.stderr
            except OSError:
                pass

    def stopping(self) -> None:
        """The command is stopping (for its own reason, or cleaning up): from now on a
        signal only gets the note."""
        self._stopping = True

    def wake(self) -> None:
        """Make :meth:`wait` return now; from any thread."""
        if self._waker is not None:
            self._waker.wake()

    def wait(self, timeout: Optional[float]) -> Optional[signal.Signals]:
        """Sleep until a signal, a :meth:`wake` or ``timeout`` seconds (None: no limit);
        returns :attr:`received`, at once if it is set already."""
        waker = self._waker
        if waker is None:
            raise RuntimeError("Foreground.wait() outside its 'with' block")
        if self.received is None:
            select.select([waker], [], [], timeout)
            for number in waker.drain():  # the numbers of the signals (and wake()'s bytes)
                if number in STOP_SIGNALS and self.received is None:
                    self.received = signal.Signals(number)
        return self.received

    def run(
        self,
        client: "Client",
        *,
        stop_when: Optional[Callable[[], Optional[str]]] = None,
        check_every: Optional[float] = None,
    ) -> StopReason:
        """Until a stop signal, the end of ``client``, or a reason from ``stop_when``.

        ``stop_when`` is asked after each :meth:`wake` and every ``check_every``
        seconds; a text it returns is the reason to stop. The client's fatal error, if
        that is how it ended, is raised. The client is not closed here.
        """
        watcher = threading.Thread(target=self._wake_when_done, args=(client,), name="flash_wal-wait", daemon=True)
        watcher.start()
        while True:
            if self.received is not None:
                return self.received
            if client.wait(0):  # raises the fatal error that ended it
                return None
            reason = stop_when() if stop_when is not None else None
            if reason is not None:
                return reason
            self.wait(check_every)

    def _wake_when_done(self, client: "Client") -> None:
        try:
            client.wait()
        except BaseException:  # run() raises it again, from client.wait(0)
            pass
        self.wake()


def run_until_stopped(
    client: "Client",
    *,
    announce: Optional[Callable[[str], None]] = None,
    stop_when: Optional[Callable[[], Optional[str]]] = None,
    check_every: Optional[float] = None,
    note: Optional[str] = None,
) -> StopReason:
    """Start ``client``, run it until SIGTERM or SIGINT (see :meth:`Foreground.run`),
    then close it; returns why it stopped.

    Must run in the main thread, which receives signals. ``announce`` is given a line
    when the client streams, when a signal stops it and once it is closed; ``note``
    is the :class:`Foreground`'s. A fatal error of the client closes it too and is
    raised; a signal is a normal end.
    """
    say = announce if announce is not None else _silent
    stopped: StopReason = None
    with Foreground(note) as foreground:
        try:
            client.start()  # a signal during start() waits in the waker
            say(f"flash_wal: streaming {_what_streams(client)}; SIGTERM or Ctrl-C stops")
            stopped = foreground.run(client, stop_when=stop_when, check_every=check_every)
            if isinstance(stopped, signal.Signals):
                say(f"flash_wal: {stopped.name} received, closing")
        finally:
            foreground.stopping()
            client.close()
    client.wait(0)  # raises the fatal error that ended the run, if one did
    say("flash_wal: closed")
    return stopped


def _what_streams(client: "Client") -> str:
    """"public.posts (slot s, publication p)": the tables, and the server objects of a
    wal_logical driver."""
    from .drivers.wal_logical import Driver as WalLogicalDriver

    tables = ", ".join(dict.fromkeys(str(listener.table) for listener in client.listeners)) or "messages"
    if not isinstance(client.driver, WalLogicalDriver):
        return tables
    config = client.driver.config
    return f"{tables} (slot {config.replication_slot}, publications {config.publication_name}-*)"


def _silent(_line: str) -> None:
    pass


@contextlib.contextmanager
def stderr_logging(verbosity: Optional[int]) -> Iterator[None]:
    """The ``flash_wal`` logger on stderr, and only there, while inside.

    Verbosity 0 shows warnings, 1 INFO, 2 or more DEBUG. None leaves logging alone,
    for a framework whose own logging configuration applies.
    """
    if verbosity is None:
        yield
        return
    logger = logging.getLogger("flash_wal")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
