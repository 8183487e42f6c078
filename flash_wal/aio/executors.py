"""The loop side of the dispatcher: executors whose tasks run on an asyncio event loop.

The replication thread hands tasks (batches of events, see
:mod:`flash_wal.dispatcher.workers`) to a :class:`LoopHandoff`, which wakes the loop
once for whatever piled up since it last looked, never once per event. On the loop,
:class:`CoroutineWorkers` run a listener's callbacks, awaiting coroutines, at most
``max_parallel`` tasks at once; :class:`EventQueue` holds the tasks an ``events()``
iterator hands out one event at a time. Either ends every task with the dispatcher's
``task_done`` only once every call of it completed (for ``events()``: once the loop
asked for the event after the task's last), so acknowledgement waits for coroutines.
Both give the loop back between tasks, so a stream of callbacks that never await
cannot starve it.
"""

import asyncio
import collections
import concurrent.futures
import contextvars
import inspect
import logging
import sys
import threading
from typing import Any, AsyncGenerator, Callable, Deque, Dict, List, Optional, Tuple

from ..dispatcher import Dispatcher, Executor, Task
from ..events import Event
from ..listener import UNBOUNDED_WORKERS

__all__ = ["CoroutineWorkers", "EventQueue", "LoopHandoff", "in_coroutine_callback"]

logger = logging.getLogger(__name__)

#: True in the loop tasks that run callbacks: close() called from one must not wait for itself.
in_coroutine_callback: "contextvars.ContextVar[bool]" = contextvars.ContextVar(
    "flash_wal_in_coroutine_callback", default=False
)


class LoopHandoff:
    """Tasks from the replication thread to the loop, one wake-up per batch of tasks;
    and what the loop executors of one client share (the loop, the stop flag, the
    threads of plain callbacks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inbox: List[Tuple["LoopExecutor", Task]] = []
        self._scheduled = False
        #: The loop that started the client; set before streaming begins.
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        #: close() was called: no callback starts from now on.
        self.stopping = False
        self._threads: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def put(self, executor: "LoopExecutor", task: Task) -> None:
        """From the replication thread: run ``task`` on the loop soon."""
        with self._lock:
            self._inbox.append((executor, task))
            if self._scheduled:
                return
            self._scheduled = True
        self.call_soon(self._drain)

    def call_soon(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the loop (at once if the loop is gone: nothing else will)."""
        loop = self.loop
        try:
            if loop is None:
                raise RuntimeError("no loop")
            loop.call_soon_threadsafe(function)
        except RuntimeError:  # the loop is closed: the bookkeeping must still happen
            function()

    def _drain(self) -> None:
        with self._lock:
            items, self._inbox = self._inbox, []
            self._scheduled = False
        for executor, task in items:
            executor.accept(task)

    def threads(self) -> concurrent.futures.ThreadPoolExecutor:
        """The worker threads of plain callbacks of a listener that also has coroutines."""
        if self._threads is None:
            self._threads = concurrent.futures.ThreadPoolExecutor(
                max_workers=UNBOUNDED_WORKERS, thread_name_prefix="flash_wal-aio"
            )
        return self._threads

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False)


class LoopExecutor(Executor):
    """An executor whose tasks are accepted on the loop."""

    def __init__(self, handoff: LoopHandoff, dispatcher: Dispatcher) -> None:
        self._handoff = handoff
        self._dispatcher = dispatcher
        self._stopping = False

    def put(self, task: Task) -> None:
        if self._stopping:
            # Detached or closed while the replication thread routed to it: only the
            # bookkeeping is left, as with worker threads.
            self._dispatcher.task_done(task, 0 if self._dispatcher.closing else None)
        else:
            self._handoff.put(self, task)

    def accept(self, task: Task) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stopping = True


def is_coroutine_callback(callback: Callable[[Any], Any]) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)
    )


class CoroutineWorkers(LoopExecutor):
    """Up to ``limit`` loop tasks (-1: no limit) running one listener's callbacks:
    coroutine functions are awaited on the loop, plain functions run on worker threads."""

    def __init__(self, handoff: LoopHandoff, dispatcher: Dispatcher, limit: int) -> None:
        super().__init__(handoff, dispatcher)
        self._limit = sys.maxsize if limit == -1 else limit
        self._tasks: Deque[Task] = collections.deque()  # the loop's only
        self._running = 0
        self._kinds: Dict[Callable[[Any], Any], bool] = {}  # callback -> is a coroutine function
        self._loop_tasks: "set[asyncio.Task[None]]" = set()  # kept, or the loop may drop them

    def accept(self, task: Task) -> None:
        self._tasks.append(task)
        if self._running < self._limit:
            self._running += 1
            loop_task = asyncio.get_running_loop().create_task(self._work())
            self._loop_tasks.add(loop_task)
            loop_task.add_done_callback(self._loop_tasks.discard)

    async def _work(self) -> None:
        in_coroutine_callback.set(True)
        tasks = self._tasks
        try:
            while tasks:
                await self._run(tasks.popleft())
                await asyncio.sleep(0)  # the loop's turn between batches
        except asyncio.CancelledError:
            # The loop is shutting down: what was not run is never acknowledged.
            while tasks:
                self._dispatcher.task_done(tasks.popleft(), 0)
            raise
        finally:
            self._running -= 1

    async def _run(self, task: Task) -> None:
        route, dispatcher, handoff = task.route, self._dispatcher, self._handoff
        callbacks_for, still_wanted, kinds = route.callbacks_for, route.still_wanted, self._kinds
        delivered: Optional[int] = None
        try:
            for index, event in enumerate(task.events):
                if not route.active or handoff.stopping:
                    if dispatcher.closing or handoff.stopping:
                        delivered = index  # the rest is not delivered: never acknowledged
                    break
                for callback in callbacks_for(event):
                    if not still_wanted(callback) or handoff.stopping:
                        continue
                    is_coroutine = kinds.get(callback)
                    if is_coroutine is None:
                        is_coroutine = kinds[callback] = is_coroutine_callback(callback)
                    try:
                        if is_coroutine:
                            await callback(event)
                        else:
                            await asyncio.get_running_loop().run_in_executor(handoff.threads(), callback, event)
                    except asyncio.CancelledError:
                        delivered = index
                        raise
                    except BaseException as exc:  # a user callback: report and go on
                        dispatcher.callback_failed(exc, event, callback)
        finally:
            dispatcher.task_done(task, delivered)


class EventQueue(LoopExecutor):
    """The tasks of an ``events()`` subscription, handed out one event at a time.

    Its size is bounded by the client's ``max_queued_events``: past it the replication
    thread stops reading, as for callbacks.
    """

    def __init__(self, handoff: LoopHandoff, dispatcher: Dispatcher) -> None:
        super().__init__(handoff, dispatcher)
        self._tasks: Deque[Task] = collections.deque()  # the loop's only
        self._waiter: "Optional[asyncio.Future[None]]" = None
        self._ended = False  # the loop saw close(): buffered tasks are settled
        self._current: Optional[Task] = None  # the task being handed out
        self._position = 0  # the index of its event last handed out

    def accept(self, task: Task) -> None:
        if self._ended:
            self._dispatcher.task_done(task, 0 if self._dispatcher.closing or self._handoff.stopping else None)
            return
        self._tasks.append(task)
        self._wake()

    def close(self) -> None:
        super().close()
        self._handoff.call_soon(self._end)

    def _end(self) -> None:
        """On the loop: settle what was never handed out (and the batch being handed
        out, which a suspended iterator may never resume), and end the iteration."""
        self._ended = True
        cut_short = self._dispatcher.closing or self._handoff.stopping
        if self._current is not None:
            self._settle(self._current, self._position if cut_short else None)
        while self._tasks:
            self._dispatcher.task_done(self._tasks.popleft(), 0 if cut_short else None)
        self._wake()

    def _settle(self, task: Task, delivered: Optional[int]) -> None:
        if self._current is task:
            self._current = None
            self._dispatcher.task_done(task, delivered)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def events(self) -> AsyncGenerator[Event, None]:
        """The events, in order; ends when the subscription or the client closes."""
        dispatcher, handoff, tasks = self._dispatcher, self._handoff, self._tasks
        while True:
            if not tasks:
                if self._ended:
                    return
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                continue
            task = self._current = tasks.popleft()
            route = task.route
            delivered: Optional[int] = None
            try:
                for index, event in enumerate(task.events):
                    if not route.active or handoff.stopping:
                        if dispatcher.closing or handoff.stopping:
                            delivered = index
                        break
                    self._position = index  # handed out, done with once the next is asked for
                    yield event
            finally:
                # Reached once the loop asked for the event after this task's last, or
                # the iteration was left (break, exception, cancellation).
                self._settle(task, delivered)
            await asyncio.sleep(0)  # the loop's turn between batches
