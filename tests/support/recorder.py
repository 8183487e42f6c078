"""A callback that records events and lets a test wait for a count."""

import threading
from typing import List

from flash_wal import Event

from .waiting import DEFAULT_TIMEOUT

__all__ = ["Recorder"]


class Recorder:
    """A callback that records events and lets a test wait for a count."""

    def __init__(self) -> None:
        self.events: List[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> List[Event]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.events) >= count, timeout):
                raise AssertionError(
                    f"expected {count} events within {timeout:.0f} s, got {len(self.events)}: {self.events!r}"
                )
            return list(self.events)

    def __len__(self) -> int:
        return len(self.events)
