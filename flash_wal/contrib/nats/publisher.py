"""The asyncio side of :class:`~flash_wal.contrib.nats.JetStreamSink`: one event loop
in a thread of its own, one NATS connection, publishes retried until JetStream
acknowledges them.

nats-py is asyncio only; the sink's callbacks run on the dispatcher's worker threads,
which hand each message over with :func:`asyncio.run_coroutine_threadsafe` and get a
:class:`concurrent.futures.Future` back: the dispatcher counts the event as done when
that future is (see :mod:`flash_wal.dispatcher.dispatcher`).

Order: messages are sent in the order they are handed over (one connection, one loop,
FIFO). When a publish fails or times out, it is retried with a bounded backoff, and
until every failed message has been stored again no new message is sent; failed ones
are retried one at a time, in the order they were sent. A message sent before the
failure was noticed may still be stored before an earlier one that failed: the
duplicate window makes every retry safe, but order is then kept only as far as
JetStream stored what it received.
"""

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Dict, List, Optional

import nats
import nats.errors
import nats.js
import nats.js.api
import nats.js.errors

from ...errors import ConfigurationError, FlashError
from .subjects import any_matches

__all__ = ["Publisher", "StreamSettings"]

logger = logging.getLogger(__name__)

#: What a publish may fail with that a later try may not: timeouts, a lost
#: connection, no stream leader (503), a full buffer while reconnecting.
RETRIED = (asyncio.TimeoutError, nats.errors.Error)


class StreamSettings:
    """How ``--create-stream`` makes the stream: its subjects, replicas and duplicate window."""

    def __init__(self, subjects: List[str], replicas: int = 1, duplicate_window: float = 120.0) -> None:
        if replicas < 1 or replicas > 5:
            raise ConfigurationError(f"a stream has 1 to 5 replicas; got {replicas}")
        if duplicate_window <= 0:
            raise ConfigurationError(f"the duplicate window must be positive seconds; got {duplicate_window}")
        self.subjects = subjects
        self.replicas = replicas
        self.duplicate_window = duplicate_window


class Publisher:
    """A NATS connection on an event loop of its own thread."""

    def __init__(self, servers: List[str], stream: str, *, ack_timeout: float, max_backoff: float,
                 connect_timeout: float) -> None:
        self.servers = servers
        self.stream = stream
        self.ack_timeout = ack_timeout
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.duplicate_window: Optional[float] = None
        self.stream_subjects: List[str] = []
        self.retries = 0
        self.published = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=f"flash_wal-nats-{stream}", daemon=True)
        self._nc: Any = None
        self._js: Any = None
        self._failed = 0  # messages being retried
        self._clear: Optional[asyncio.Event] = None  # set while nothing is being retried
        self._retry_lock: Optional[asyncio.Lock] = None
        self._stopping = False

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coroutine: Any, timeout: Optional[float]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # --- from the sink's thread ---------------------------------------------------------

    def connect(self, subjects: List[str], create: Optional[StreamSettings]) -> None:
        """Connect, and check that the stream exists and takes every one of ``subjects``
        (or create it); raises ConfigurationError or FlashError, leaving nothing running."""
        self._thread.start()
        try:
            self._call(self._connect(subjects, create), self.connect_timeout + 4 * self.ack_timeout + 5)
        except BaseException:
            self.close(0)
            raise

    def publish(self, subject: str, body: bytes, msg_id: str) -> "concurrent.futures.Future[Any]":
        return asyncio.run_coroutine_threadsafe(self._publish(subject, body, msg_id), self._loop)

    def close(self, timeout: float) -> None:
        """Close the connection (what is still unacknowledged is cancelled) and the loop."""
        self._stopping = True
        if self._thread.is_alive():
            try:
                self._call(self._close(), timeout + 5)
            except Exception:
                logger.warning("the NATS connection did not close cleanly", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # --- on the loop --------------------------------------------------------------------

    async def _connect(self, subjects: List[str], create: Optional[StreamSettings]) -> None:
        self._clear = asyncio.Event()
        self._clear.set()
        self._retry_lock = asyncio.Lock()
        try:
            self._nc = await nats.connect(
                servers=self.servers, connect_timeout=self.connect_timeout, max_reconnect_attempts=-1,
                reconnect_time_wait=0.5, allow_reconnect=True, name="flash_wal",
                error_cb=self._on_error, disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
            )
        except Exception as exc:
            raise FlashError(f"cannot connect to NATS at {', '.join(self.servers)}: {exc or type(exc).__name__}") from exc
        self._js = self._nc.jetstream(timeout=self.ack_timeout)
        info = await self._stream_info(create)
        self.stream_subjects = list(info.config.subjects or ())
        self.duplicate_window = info.config.duplicate_window
        self.check_subjects(subjects)

    def check_subjects(self, subjects: List[str]) -> None:
        missing = [subject for subject in subjects if not any_matches(self.stream_subjects, subject)]
        if missing:
            raise ConfigurationError(
                f"the JetStream stream {self.stream!r} takes the subjects {self.stream_subjects}, not "
                f"{missing[0]!r}: add it to the stream's subjects, or choose another subject prefix"
            )

    async def _stream_info(self, create: Optional[StreamSettings]) -> Any:
        for attempt in range(4):  # a cluster electing its meta leader answers 503 for a while
            try:
                return await self._js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                if create is None:
                    raise ConfigurationError(
                        f"there is no JetStream stream {self.stream!r} on {', '.join(self.servers)}: "
                        f"create it (or use --create-stream)"
                    ) from None
                return await self._js.add_stream(
                    name=self.stream, subjects=create.subjects, num_replicas=create.replicas,
                    duplicate_window=create.duplicate_window, storage=nats.js.api.StorageType.FILE,
                )
            except RETRIED as exc:
                if attempt == 3:
                    raise FlashError(f"JetStream on {', '.join(self.servers)} does not answer: {exc!r}") from exc
                await asyncio.sleep(1)
        raise AssertionError("unreachable")

    async def _publish(self, subject: str, body: bytes, msg_id: str) -> Any:
        assert self._clear is not None and self._retry_lock is not None
        while self._failed:  # hold new messages back while failed ones are retried
            await self._clear.wait()
        try:
            return await self._attempt(subject, body, msg_id)
        except RETRIED as exc:
            first_error: BaseException = exc
        self._failed += 1
        self._clear.clear()
        try:
            async with self._retry_lock:  # FIFO: failed messages go again in the order they failed
                delay = 0.05
                error = first_error
                while True:
                    self.retries += 1
                    if self.retries == 1 or self.retries % 50 == 0:
                        logger.warning("publishing to %s failed (%r); retrying, never dropping it", subject, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
                    try:
                        return await self._attempt(subject, body, msg_id)
                    except RETRIED as exc:
                        error = exc
        finally:
            self._failed -= 1
            if not self._failed:
                self._clear.set()

    async def _attempt(self, subject: str, body: bytes, msg_id: str) -> Any:
        if self._stopping:
            raise asyncio.CancelledError()
        ack = await self._js.publish(
            subject, body, timeout=self.ack_timeout, stream=self.stream, headers={"Nats-Msg-Id": msg_id},
        )
        self.published += 1
        return ack

    async def _close(self) -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    async def _on_error(self, exc: Exception) -> None:
        logger.debug("NATS: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            logger.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS at %s", self._nc.connected_url.netloc if self._nc else "?")

    def figures(self) -> Dict[str, Any]:
        return {"published": self.published, "retries": self.retries}
