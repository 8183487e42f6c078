"""Callbacks that finish later: one that returns a :class:`concurrent.futures.Future`
is done (for acknowledgement, queued events and ``on_error``) when that future is. A
sink that hands events on asynchronously (``flash_wal.contrib.nats``) returns one, so a
``max_parallel=1`` listener keeps calling in commit order with many hand-offs in flight."""

import functools
import threading
from concurrent.futures import Future
from typing import Any, Callable, List, Optional, Tuple

from .acknowledgement import AckTracker
from .workers import Task

__all__ = ["finish_when_done"]


def finish_when_done(tracker: AckTracker, task: Task, delivered: Optional[int],
                     later: List[Tuple["Future[Any]", Any, Any]],
                     callback_failed: Callable[[BaseException, Any, Any], None]) -> None:
    """The task is done once every future its callbacks returned is done."""
    lock = threading.Lock()
    state = {"remaining": len(later), "cancelled": 0}

    def future_done(event: Any, callback: Any, future: "Future[Any]") -> None:
        if future.cancelled():
            cancelled = 1
        else:
            cancelled = 0
            exc = future.exception()
            if exc is not None:
                callback_failed(exc, event, callback)
        with lock:
            state["remaining"] -= 1
            state["cancelled"] += cancelled
            if state["remaining"]:
                return
        events = len(task.events)
        if state["cancelled"]:
            # Not delivered: the transaction must come again, so it is never acknowledged.
            done = events if delivered is None else delivered
            tracker.task_done(task.txn, events, max(0, done - state["cancelled"]), task.size)
        else:
            tracker.task_done(task.txn, events, delivered, task.size)

    for future, event, callback in later:
        future.add_done_callback(functools.partial(future_done, event, callback))
