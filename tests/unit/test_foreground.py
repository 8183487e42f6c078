"""flash_wal.foreground, without a server: a stand-in client, and real signals sent to
this process while the runner holds SIGTERM and SIGINT."""

import logging
import os
import signal
import threading
from types import SimpleNamespace
from typing import Callable, List, Optional

import pytest

from flash_wal.errors import FlashError
from flash_wal.foreground import Foreground, run_until_stopped, stderr_logging

NOTE = "test: stopping, please wait\n"


class StandInClient:
    """What the runner uses of a Client: start, wait, close, driver, listeners."""

    def __init__(self, on_start: Optional[Callable[[], None]] = None,
                 on_close: Optional[Callable[[], None]] = None) -> None:
        self.driver = object()  # not a wal_logical driver: no slot in the announcement
        self.listeners = [SimpleNamespace(table="public.posts"), SimpleNamespace(table="public.posts")]
        self.closed = 0
        self.waiting = threading.Event()  # the runner's watcher waits on the client
        self._on_start, self._on_close = on_start, on_close
        self._done = threading.Event()
        self._fatal: Optional[BaseException] = None

    def start(self) -> None:
        if self._on_start is not None:
            self._on_start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        if timeout is None:
            self.waiting.set()
        finished = self._done.wait(timeout)
        if self._fatal is not None:
            raise self._fatal
        return finished

    def close(self) -> None:
        self.closed += 1
        if self._on_close is not None:
            self._on_close()
        self._done.set()

    def fail(self, exc: BaseException) -> None:
        self._fatal = exc
        self._done.set()


def once_running(client: StandInClient, action: Callable[[], None]) -> threading.Thread:
    """Do ``action`` from another thread once the runner waits on ``client``."""

    def act() -> None:
        if client.waiting.wait(10):
            action()

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def kill_me(signum: int) -> Callable[[], None]:
    return lambda: os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_streaming_closes_the_client(signum: int) -> None:
    client = StandInClient()
    lines: List[str] = []
    helper = once_running(client, kill_me(signum))
    assert run_until_stopped(client, announce=lines.append) == signum  # type: ignore[arg-type]
    helper.join(10)
    assert client.closed == 1
    assert lines == [
        "flash_wal: streaming public.posts; SIGTERM or Ctrl-C stops",
        f"flash_wal: {signal.Signals(signum).name} received, closing",
        "flash_wal: closed",
    ]


def test_a_signal_during_start_waits_and_stops_the_run_once_started() -> None:
    client = StandInClient(on_start=lambda: signal.raise_signal(signal.SIGTERM))
    lines: List[str] = []
    assert run_until_stopped(client, announce=lines.append) == signal.SIGTERM  # type: ignore[arg-type]
    assert lines[1:] == ["flash_wal: SIGTERM received, closing", "flash_wal: closed"]


def test_signals_after_the_first_only_get_the_note(capfd: pytest.CaptureFixture[str]) -> None:
    def twice() -> None:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)

    client = StandInClient(on_start=twice, on_close=lambda: signal.raise_signal(signal.SIGINT))
    assert run_until_stopped(client, note=NOTE) == signal.SIGINT  # type: ignore[arg-type]
    assert capfd.readouterr().err == NOTE * 2  # the second, and the one while closing


def test_the_first_signal_gets_no_note(capfd: pytest.CaptureFixture[str]) -> None:
    client = StandInClient()
    helper = once_running(client, kill_me(signal.SIGTERM))
    assert run_until_stopped(client, note=NOTE) == signal.SIGTERM  # type: ignore[arg-type]
    helper.join(10)
    assert capfd.readouterr().err == ""


def test_the_commands_own_reason_to_stop() -> None:
    asked: List[int] = []

    def stop_when() -> Optional[str]:
        asked.append(1)
        return "enough" if len(asked) >= 3 else None

    client = StandInClient()
    lines: List[str] = []
    stopped = run_until_stopped(client, announce=lines.append,  # type: ignore[arg-type]
                                stop_when=stop_when, check_every=0.01)
    assert stopped == "enough" and client.closed == 1
    assert lines[1:] == ["flash_wal: closed"]


def test_a_fatal_error_of_the_client_is_raised_once_it_is_closed() -> None:
    client = StandInClient()
    once_running(client, lambda: client.fail(FlashError("the server went away")))
    with pytest.raises(FlashError, match="the server went away"):
        run_until_stopped(client)  # type: ignore[arg-type]
    assert client.closed == 1


def test_a_client_closed_elsewhere_ends_the_run_normally() -> None:
    client = StandInClient()
    once_running(client, client.close)  # as a callback calling close() would
    lines: List[str] = []
    assert run_until_stopped(client, announce=lines.append) is None  # type: ignore[arg-type]
    assert lines[-1] == "flash_wal: closed"


def test_signal_handlers_and_wakeup_fd_are_given_back() -> None:
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    with Foreground() as foreground:
        assert signal.getsignal(signal.SIGINT) != handlers[signal.SIGINT]
        assert foreground.wait(0) is None
    assert {number: signal.getsignal(number) for number in handlers} == handlers
    previous = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(previous)
    assert previous == -1


def test_the_main_thread_only() -> None:
    errors: List[BaseException] = []

    def run() -> None:
        try:
            run_until_stopped(StandInClient())  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], FlashError)
    assert "main thread" in str(errors[0])


def test_stderr_logging_is_undone_and_none_leaves_logging_alone(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("flash_wal")
    before = (logger.level, logger.propagate, list(logger.handlers))
    with stderr_logging(None):
        assert (logger.level, logger.propagate, list(logger.handlers)) == before
    with stderr_logging(1):
        assert logger.level == logging.INFO and not logger.propagate
        logging.getLogger("flash_wal.test").info("seen")
        logging.getLogger("flash_wal.test").debug("not seen")
    with stderr_logging(2):
        assert logger.level == logging.DEBUG
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
    err = capsys.readouterr().err
    assert "INFO flash_wal.test: seen" in err and "not seen" not in err
