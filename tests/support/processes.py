"""Subprocesses watched line by line, and the consumer process of the fault tests."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Callable, List, Optional

from .waiting import wait_for

__all__ = ["ROOT", "WatchedProcess", "ConsumerProcess", "free_port", "http_get_body"]

#: The repository's root: the working directory of the processes tests start.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WatchedProcess:
    """A subprocess whose output lines (stdout and stderr together) are collected as
    they come, to be waited on with deadlines."""

    def __init__(self, argv: List[str], *, cwd: str = ROOT, env: Optional[dict] = None) -> None:
        self.lines: List[str] = []
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # a signal to its group reaches its children too
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, text: str, timeout: float = 30) -> None:
        """Wait for a line that is exactly ``text``."""
        self._wait(lambda: text in self.lines, timeout, repr(text))

    def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        try:
            wait_for(lambda: predicate() or self.proc.poll() is not None, timeout, f"{what} from the process")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its output:\n{self.output}") from None
        found = predicate()
        assert found, f"the process exited ({self.proc.returncode}) before {what}:\n{self.output}"
        return found

    def wait_output(self, fragment: str, timeout: float = 30) -> str:
        """Wait for a line containing ``fragment``; returns that line."""
        return self._wait(lambda: next((line for line in list(self.lines) if fragment in line), None), timeout, repr(fragment))

    def signal_group(self, number: int) -> None:
        os.killpg(self.proc.pid, number)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            self.kill()
            raise AssertionError("the process did not exit:\n" + self.output) from None
        self._reader.join(10)
        return code

    def dump_stacks(self) -> None:
        """Add the stacks of a process that hangs to its output, if it can print them."""

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get_body(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as http:
        http.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        return http.makefile("rb").read().partition(b"\r\n\r\n")[2]


class ConsumerProcess(WatchedProcess):
    """``tests/support/consumer.py`` in a process of its own, so that SIGKILL is real."""

    def __init__(self, dsn: str, table: str, slot: str, prefix: str, *options: str) -> None:
        super().__init__([sys.executable, "-m", "tests.support.consumer", dsn, table, slot, prefix, *options])

    def dump_stacks(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack
        wait_for(lambda: any("most recent call first" in line for line in self.lines), 5, "the stacks")
