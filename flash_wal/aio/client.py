"""AsyncClient: the threaded client's engine, with an asyncio face.

The replication thread and the dispatcher are those of :class:`~flash_wal.Client`; only
where a listener's callbacks run changes (see :mod:`.executors`): coroutine callbacks,
and ``events()`` iterators, on the loop that started the client, plain callbacks on
worker threads as with ``Client``. Blocking steps (start, close, wait) run on threads so
that the loop never waits on the server.
"""

import asyncio
import logging
from types import TracebackType
from typing import Any, AsyncGenerator, AsyncIterator, Callable, Dict, List, Optional, Type, TypeVar, Union

from ..client import Client, ClientConfig
from ..dispatcher import Dispatcher, Executor, Task, worker_threads
from ..errors import ConfigurationError
from ..events import Event
from ..listener import Listener, ListenerConfig
from ..operations import Operation
from .executors import CoroutineWorkers, EventQueue, LoopHandoff, in_coroutine_callback, is_coroutine_callback

__all__ = ["AsyncClient"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def delivered_by_events(event: Event) -> None:
    """The callback an ``events()`` listener is registered with, so that the dispatcher
    routes the operations asked for to it; its events go to the iterator instead."""


class _LoopClient(Client):
    """A Client whose listeners run on an event loop when they have coroutine callbacks."""

    def __init__(self, handoff: LoopHandoff, config: Optional[ClientConfig], **kwargs: Any) -> None:
        self.handoff = handoff
        #: Listeners made by events(), and the queue each is to get.
        self.event_queues: Dict[Listener, EventQueue] = {}
        super().__init__(config, **kwargs)

    def _executor_for(self, listener: Listener, run: Callable[[Task], None]) -> Executor:
        queue = self.event_queues.get(listener)
        if queue is not None:
            return queue
        callbacks = [cb for op in (Operation.ALL | Operation.READ).atoms() for cb in listener.callbacks_for(op)]
        if callbacks and not any(is_coroutine_callback(cb) for cb in callbacks):
            return worker_threads(listener, run)
        return CoroutineWorkers(self.handoff, self.dispatcher, listener.config.max_parallel)

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher


class AsyncClient:
    """Streams row changes to coroutine callbacks and ``events()`` iterators.

    Same arguments as :class:`~flash_wal.Client`. One per process: its replication
    thread and connection serve every listener of the loop that starts it.
    """

    def __init__(self, config: Optional[ClientConfig] = None, **kwargs: Any) -> None:
        self._handoff = LoopHandoff()
        self._client = _LoopClient(self._handoff, config, **kwargs)
        self.config = self._client.config
        self.driver = self._client.driver
        self._background: "set[asyncio.Task[None]]" = set()
        self._subscriptions: Dict[Listener, EventQueue] = {}
        self._started = False

    # --- listeners (plain methods) ----------------------------------------------------

    def attach(self, *listeners: Listener) -> None:
        """Attach listeners, before or after start(). A listener with a coroutine callback
        (or none yet) runs on the loop; one with plain callbacks only, on worker threads."""
        self._client.attach(*listeners)

    def detach(self, *listeners: Listener) -> None:
        """Detach listeners: no callback of theirs starts once this returns (a coroutine
        already running finishes on its own)."""
        self._client.detach(*listeners)

    def on(
        self, table: str, operations: Union[Operation, str] = Operation.ALL, **listener_options: Any
    ) -> Callable[[F], F]:
        """Decorator, as ``Client.on``: ``async def`` and plain functions alike."""
        return self._client.on(table, operations, **listener_options)

    def on_message(self, prefix: str) -> Callable[[F], F]:
        """Decorator, as ``Client.on_message``; message callbacks are plain functions,
        run on a worker thread."""
        client_decorator = self._client.on_message(prefix)

        def decorator(func: F) -> F:
            if is_coroutine_callback(func):
                raise ConfigurationError("on_message takes plain functions; coroutine ones are not supported")
            return client_decorator(func)

        return decorator

    @property
    def listeners(self) -> List[Listener]:
        return self._client.listeners

    def stats(self) -> Dict[str, Any]:
        """As ``Client.stats()``."""
        return self._client.stats()

    def events(
        self, table: str, operations: Union[Operation, str] = Operation.ALL, **listener_options: Any
    ) -> AsyncIterator[Event]:
        """Subscribe now to ``table``'s changes; iterate the result with ``async for``.

        Takes the options of :class:`~flash_wal.ListenerConfig`. A transaction is
        acknowledged once the loop asked for the event after its last one (or left the
        iteration). Leaving the ``async for`` (break, an exception, cancelling the task)
        ends the subscription; so does closing the client.
        """
        listener = Listener(ListenerConfig(table=table, **listener_options))
        listener.on(operations, delivered_by_events)
        queue = EventQueue(self._handoff, self._client.dispatcher)
        self._client.event_queues[listener] = queue
        try:
            self._client.attach(listener)
        finally:
            del self._client.event_queues[listener]
        self._subscriptions[listener] = queue
        return self._subscription(listener, queue)

    async def _subscription(self, listener: Listener, queue: EventQueue) -> AsyncIterator[Event]:
        events = queue.events()
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # now, not when collected: its batch is settled at once
            self._subscriptions.pop(listener, None)
            if listener in self._client.listeners:
                self._client.detach(listener)
            logger.debug("events() of %s ended", listener.table)

    # --- life cycle (awaited) ---------------------------------------------------------

    async def start(self) -> None:
        """Set up the server and start streaming, on a thread; the loop awaiting this is
        the one coroutine callbacks run on."""
        loop = asyncio.get_running_loop()
        self._handoff.loop = loop
        self._started = True
        await loop.run_in_executor(None, self._client.start)

    async def wait(self) -> None:
        """Until close() or a fatal error, which is raised."""
        await asyncio.get_running_loop().run_in_executor(None, self._client.wait)

    async def close(self) -> None:
        """Stop streaming, let running coroutines finish within shutdown_timeout, clean up.

        Awaited from a callback, it returns at once: no other callback starts, and the
        client finishes closing once that callback has returned.
        """
        self._handoff.stopping = True  # before any await: no callback starts from here on
        self._end_subscriptions()
        if in_coroutine_callback.get():
            task = asyncio.get_running_loop().create_task(self._close_on_thread())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        await self._close_on_thread()

    async def _close_on_thread(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._client.close)
        finally:
            self._handoff.close()

    def _end_subscriptions(self) -> None:
        """events() iterators end now: what they hold and did not hand out is not
        acknowledged, and close() does not wait for a consumer that is waiting for it."""
        for queue in list(self._subscriptions.values()):
            queue.close()

    async def __aenter__(self) -> "AsyncClient":
        if not self._started:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncClient {self._client!r}>"
