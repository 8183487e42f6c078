"""What benchmarks/kill_backlog.py and benchmarks/soak.py share: an embedded server,
the consumer process of tests/support/consumer.py, and reading what it recorded."""

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.consumer import RecordFile  # noqa: E402  (the consumer's own format)

__all__ = ["ROOT", "RecordFile", "Consumer", "wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Consumer:
    """``python -m tests.support.consumer`` in a process of its own (so that SIGKILL is real)."""

    def __init__(self, dsn: str, table: str, slot: str, prefix: str, *options: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.consumer", dsn, table, slot, prefix, "--durable", *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_streaming(self, timeout: float = 60) -> None:
        wait_until(lambda: "streaming" in self.lines or self.proc.poll() is not None, timeout, "the consumer to stream")
        if "streaming" not in self.lines:
            raise SystemExit("the consumer exited before streaming:\n" + "\n".join(self.lines))

    def rss_kib(self) -> Optional[int]:
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise SystemExit("the consumer did not close within %.0f s:\n%s" % (timeout, "\n".join(self.lines)))
