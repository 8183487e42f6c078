"""The wal_logical driver's settings, checked when made."""

import re
from typing import Any, Tuple

import attr

from ...errors import ConfigurationError
from ...validators import instance_of, positive_int, seconds
from . import ownership

__all__ = ["DriverConfig"]

_SERVER_NAME = re.compile(r"[a-z0-9_]+")
_MAX_NAME_BYTES = 63


def _check_server_name(_instance: Any, attribute: "attr.Attribute[str]", value: Any) -> None:
    if not isinstance(value, str) or not _SERVER_NAME.fullmatch(value) or len(value) > _MAX_NAME_BYTES:
        raise ConfigurationError(
            f"{attribute.name} must be 1 to {_MAX_NAME_BYTES} lower-case letters, digits or "
            f"underscores (it names objects on the server); got {value!r}"
        )


@attr.s(frozen=True, slots=True, kw_only=True)
class DriverConfig:
    """Settings of the wal_logical driver. Every instance needs its own names."""

    #: Start of the publications' names, which are
    #: ``<publication_slot_prefix>-<replication_slot>-<operation>`` (63 bytes at most:
    #: with ``-truncate``, prefix and slot together have 53). Unique per client. Names
    #: are 1 to 63 lower-case letters, digits and underscores.
    publication_slot_prefix: str = attr.ib(default="flash_publication", validator=_check_server_name)
    #: The replication slot's exact name. Unique per running client.
    replication_slot: str = attr.ib(default="flash_replication", validator=_check_server_name)
    #: ``True`` (PostgreSQL 14+): the server sends large transactions while they are in
    #: progress instead of decoding them to its own disk first; flash_wal holds their
    #: changes and delivers them once the transaction commits, in order, or never if it
    #: rolls back (a rolled-back savepoint drops only its rows).
    use_streaming: bool = attr.ib(default=False, validator=instance_of(bool))
    #: Bytes of one streamed transaction held in memory; past it the rest goes to an
    #: anonymous temporary file, removed when delivered, rolled back or closed.
    stream_buffer_bytes: int = attr.ib(
        default=16 * 1024 * 1024, validator=positive_int, metadata={"shown_default": "16 MiB"}
    )
    #: ``False``: a temporary slot, gone with the client; changes committed while no
    #: client runs are not delivered. ``True``: a persistent slot and publication that
    #: outlive the client; the next start resumes after the last acknowledged
    #: transaction (at-least-once). ``driver.drop(database_cnx)`` or ``flash-wal
    #: cleanup`` removes them.
    durable: bool = attr.ib(default=False, validator=instance_of(bool))
    #: Set ``REPLICA IDENTITY FULL`` on listened tables so updates and deletes carry the
    #: whole old row. ``False`` leaves tables alone: then ``UpdateEvent.old`` is
    #: ``None`` unless the key changed and ``DeleteEvent.old`` holds the key columns.
    replica_identity_full: bool = attr.ib(default=True, validator=instance_of(bool))
    #: Most seconds between two status updates to the server, moved or not, and
    #: between two checks of the publication; at least 1. Acknowledgements go out
    #: within 20 ms of moving, whatever this says.
    status_interval: float = attr.ib(default=10.0, validator=seconds(1))
    #: Seconds ``start()`` waits for the slot of a client that died to be released.
    slot_wait_timeout: float = attr.ib(default=5.0, validator=seconds(0, inclusive=False))
    #: Seconds ``start()`` and ``attach()`` wait on the server: for locks on listened
    #: tables, and, while the slot is created, for the transactions open at that moment
    #: to end. Past it: a ``ConfigurationError`` naming the cause.
    setup_timeout: float = attr.ib(default=30.0, validator=seconds(0, inclusive=False))
    #: After a lost connection the client tries again at once, then waits this many
    #: seconds after each failed try, doubling up to ``reconnect_max_delay``; it
    #: retries until closed. With a temporary slot, changes committed while
    #: disconnected are lost.
    reconnect_delay: float = attr.ib(default=0.5, validator=seconds(0, inclusive=False))
    #: The longest wait between two reconnection attempts.
    reconnect_max_delay: float = attr.ib(default=30.0, validator=seconds(0, inclusive=False))

    #: ``True`` (PostgreSQL 15+): the listeners' conditions also become the
    #: publications' row filters, so rows no listener wants are not sent (the server
    #: still decodes them). Events are the same either way; older servers ignore it.
    server_filters: bool = attr.ib(default=False, validator=instance_of(bool))

    def __attrs_post_init__(self) -> None:
        longest = max(self.publication_names, key=len)
        if len(longest) > _MAX_NAME_BYTES:
            raise ConfigurationError(
                f"publication_slot_prefix and replication_slot together name the publication "
                f"{longest!r}, longer than {_MAX_NAME_BYTES} bytes; shorten them"
            )

    @property
    def publication_name(self) -> str:
        """The start of the publications' names, ``<prefix>-<slot>``, and the name of the
        one publication earlier versions made: derived from both names, so a restart
        finds it again, and joined by a hyphen, which neither may contain, so that no two
        configurations share it."""
        return ownership.publication_name(self.publication_slot_prefix, self.replication_slot)

    @property
    def publication_names(self) -> Tuple[str, ...]:
        """The publications of this configuration, one per operation (see :mod:`.publications`)."""
        return tuple(ownership.operation_publication_names(self.publication_slot_prefix, self.replication_slot).values())
