"""Where a listener's tasks run: the :class:`Executor` interface, and :class:`Workers`,
the worker threads of one listener, started as tasks arrive and kept until closed."""

import abc
import collections
import threading
from typing import Any, Callable, Deque, List

from ..listener import Listener, UNBOUNDED_WORKERS

__all__ = ["Executor", "ExecutorFactory", "Task", "Workers", "worker_threads"]


class Task:
    __slots__ = ("route", "txn", "events", "size")

    def __init__(self, route: Any, txn: Any, events: List[Any], size: int = 0) -> None:
        self.route = route
        self.txn = txn
        self.events = events
        self.size = size  # bytes of the changes behind the events


class Executor(abc.ABC):
    """Runs the tasks of one listener, from the replication thread's ``put`` on.

    Whoever runs a task must end it with the dispatcher's ``task_done`` (the run
    function the dispatcher gives does), or its transaction is never acknowledged.
    """

    @abc.abstractmethod
    def put(self, task: "Task") -> None:
        """Run ``task`` soon, without blocking (called by the replication thread). Once
        closed, the task still needs its bookkeeping."""

    @abc.abstractmethod
    def close(self) -> None:
        """No more tasks after those queued (from any thread, without blocking)."""


#: ``executor_for(listener, run)``: the executor of a newly attached listener, whose
#: tasks ``run`` (the dispatcher's) runs on a thread of the executor's.
ExecutorFactory = Callable[[Listener, Callable[["Task"], None]], Executor]


def worker_threads(listener: Listener, run: Callable[["Task"], None]) -> Executor:
    """The default executor: worker threads, ``max_parallel`` of them at most."""
    return Workers(str(listener.table), listener.config.max_parallel, run)


class Workers(Executor):
    """Up to ``limit`` threads (-1: :data:`UNBOUNDED_WORKERS`) running one listener's
    tasks; a thread waits for the next task once it is done with one."""

    def __init__(self, name: str, limit: int, run: Callable[[Task], None]) -> None:
        self._name = name
        self._limit = UNBOUNDED_WORKERS if limit == -1 else limit
        self._run_task = run
        self._cond = threading.Condition()
        self._tasks: Deque[Task] = collections.deque()
        self._threads: List[threading.Thread] = []
        self._waiting = 0
        self._stopping = False

    def put(self, task: Task) -> None:
        with self._cond:
            if not self._stopping:
                self._tasks.append(task)
                if self._waiting:
                    self._waiting -= 1
                    self._cond.notify()
                elif len(self._threads) < self._limit:
                    thread = threading.Thread(
                        target=self._loop, name=f"flash_wal-{self._name}-{len(self._threads)}", daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
                return
        # Detached while the replication thread was routing to it: the task only
        # needs its bookkeeping, which must not wait for a worker that is gone.
        self._run_task(task)

    def _loop(self) -> None:
        cond, tasks = self._cond, self._tasks
        while True:
            with cond:
                while not tasks:
                    if self._stopping:
                        return
                    self._waiting += 1
                    cond.wait()
                task = tasks.popleft()
            self._run_task(task)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._waiting = 0
            self._cond.notify_all()
