"""A self-pipe: the one way a thread sleeping in ``select()`` is woken from elsewhere."""

import os
import threading

__all__ = ["Waker"]


class Waker:
    """``select()`` on :meth:`fileno` returns once :meth:`wake` was called, from any
    thread, or once a signal wrote its number to :attr:`write_fd` (``signal.set_wakeup_fd``)."""

    def __init__(self) -> None:
        self._read, self.write_fd = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self.write_fd, False)
        # A descriptor number written to after close could by then belong to another file.
        self._lock = threading.Lock()
        self._open = True

    def fileno(self) -> int:
        return self._read

    def wake(self, byte: bytes = b"x") -> None:
        with self._lock:
            if self._open:
                try:
                    os.write(self.write_fd, byte)
                except BlockingIOError:
                    pass  # the pipe is full: the sleeper has been woken already

    def drain(self) -> bytes:
        """Everything written since the last drain (signal numbers, for a signal)."""
        chunks = []
        try:
            while True:
                chunk = os.read(self._read, 4096)
                if not chunk:
                    break
                chunks.append(chunk)
        except BlockingIOError:
            pass
        return b"".join(chunks)

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                os.close(self._read)
                os.close(self.write_fd)
