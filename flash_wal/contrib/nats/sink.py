"""JetStreamSink: the changes of tables published to a NATS JetStream stream.

Each event becomes one message: subject ``<prefix>.<schema>.<table>.<operation>``, body
the JSON object ``flash-wal listen`` prints, header ``Nats-Msg-Id`` unique to the event
(see :mod:`.subjects`). The sink's callback returns the publish's future, so the
dispatcher calls it for the next event at once (the window of unacknowledged messages,
``max_pending``, bounds how far it runs ahead) and counts a transaction as done only
once JetStream acknowledged each of its messages.
"""

import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from ...client import Client
from ...errors import ConfigurationError
from ...event_json import event_to_json
from ...listener import Listener, ListenerConfig
from ...operations import Operation
from ...table_name import TableName
from .publisher import Publisher, StreamSettings
from .subjects import DEFAULT_SUBJECT_PREFIX, check_prefix, message_id, subject_for

__all__ = ["JetStreamSink", "StreamSettings"]

logger = logging.getLogger(__name__)

_CHANGES = (Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.TRUNCATE)


class JetStreamSink:
    """Publishes the events of attached tables to the JetStream stream ``stream``.

    ``attach(client, table, operations)`` before ``client.start()``; the connection
    closes when the client is closed. ``create_stream`` makes the stream when it does
    not exist (otherwise that is a ConfigurationError from ``attach``).
    """

    def __init__(
        self,
        servers: Sequence[str],
        stream: str,
        *,
        subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
        max_pending: int = 1000,
        ack_timeout: float = 5.0,
        max_backoff: float = 5.0,
        connect_timeout: float = 5.0,
        create_stream: Optional[StreamSettings] = None,
    ) -> None:
        if isinstance(servers, str) or not servers or not all(isinstance(s, str) and s for s in servers):
            raise ConfigurationError(f"servers must be a list of NATS URLs such as ['nats://127.0.0.1:4222']; got {servers!r}")
        if not isinstance(stream, str) or not stream or any(c in stream for c in ".*> \t"):
            raise ConfigurationError(f"stream must be a JetStream stream name (no '.', '*', '>' or spaces); got {stream!r}")
        if max_pending < 1:
            raise ConfigurationError(f"max_pending must be at least 1; got {max_pending}")
        self.servers = list(servers)
        self.stream = stream
        self.subject_prefix = check_prefix(subject_prefix)
        self._create = create_stream
        self._publisher = Publisher(self.servers, stream, ack_timeout=ack_timeout, max_backoff=max_backoff,
                                    connect_timeout=connect_timeout)
        self._window = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._client: Optional[Client] = None
        self._connected = False
        self._stopping = False

    def attach(self, client: Client, table: str, operations: Union[Operation, str] = Operation.ALL,
               **listener_options: Any) -> Listener:
        """Publish ``table``'s events of ``operations``; listener options (fields,
        conditions, primary_key) as for :class:`~flash_wal.ListenerConfig`, except
        ``max_parallel``, which is 1: messages are published in commit order.

        Connects on the first call and checks the stream (ConfigurationError if it
        does not exist or takes none of the table's subjects)."""
        if listener_options.get("max_parallel", 1) != 1:
            raise ConfigurationError("a JetStreamSink publishes in commit order: max_parallel must be 1")
        listener_options["max_parallel"] = 1
        if isinstance(operations, str):
            operations = Operation.parse(operations)
        listener = Listener(ListenerConfig(table=table, **listener_options))
        subjects = [subject_for(self.subject_prefix, listener.table, str(op)) for op in _CHANGES if op & operations]
        with self._lock:
            if self._client is not None and self._client is not client:
                raise ConfigurationError("a JetStreamSink serves one client")
            self._publisher_ready(subjects)
            if self._client is None:
                self._client = client
                threading.Thread(target=self._close_with, args=(client,), name="flash_wal-nats-watch",
                                 daemon=True).start()
        listener.on(operations, self._publisher_for(listener.table, client))
        client.attach(listener)
        return listener

    def _publisher_ready(self, subjects: List[str]) -> None:
        if not self._connected:
            self._publisher.connect(subjects, self._create)
            self._connected = True
            logger.info("publishing to the JetStream stream %s on %s", self.stream, ", ".join(self.servers))
        else:
            self._publisher.check_subjects(subjects)

    def _publisher_for(self, table: TableName, client: Client) -> Callable[[Any], "Future[Any]"]:
        slot = str(getattr(getattr(client.driver, "config", None), "replication_slot", "flash_wal"))
        table_text = str(table)
        prefix = self.subject_prefix
        subjects: Dict[str, str] = {}
        last = [-1, -1]  # the position of the previous event, and how many came at it
        window, publisher = self._window, self._publisher

        def publish(event: Any) -> "Future[Any]":
            operation = str(event.operation)
            subject = subjects.get(operation)
            if subject is None:
                subject = subjects[operation] = subject_for(prefix, table, operation)
            position = (event.commit_lsn << 64) | event.lsn
            if position == last[0]:
                last[1] += 1
            else:
                last[0], last[1] = position, 0
            known = event.operation in _CHANGES
            key = () if known else (getattr(event, "key", None) or ())
            msg_id = message_id(slot, table_text, event.commit_lsn, event.lsn, last[1], key)
            body = event_to_json(event).encode("utf-8")
            while not window.acquire(timeout=0.5):
                if self._stopping:
                    cancelled: "Future[Any]" = Future()
                    cancelled.cancel()
                    return cancelled
            future = publisher.publish(subject, body, msg_id)
            future.add_done_callback(lambda _future: window.release())
            return future

        return publish

    def _close_with(self, client: Client) -> None:
        try:
            client.wait()
        except BaseException:  # the client's fatal error: its owner sees it from wait() too
            pass
        self.close()

    def close(self) -> None:
        """Close the NATS connection; messages not yet acknowledged are cancelled (their
        transactions are then not acknowledged to PostgreSQL). Called by itself when
        the client closes."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._publisher.close(timeout=5.0)

    def stats(self) -> Dict[str, Any]:
        """``published`` (messages JetStream acknowledged) and ``retries``."""
        return self._publisher.figures()
