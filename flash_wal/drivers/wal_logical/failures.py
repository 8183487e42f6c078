"""What a failure of the replication connection means: lost (reconnect), or fatal.

The replication thread reconnects after a lost connection and stops for anything
else; these say which is which, and word the fatal ones so that they say what to do.
"""


import psycopg2
import psycopg2.errors

from ...errors import FlashError, ReplicationError, one_line

__all__ = [
    "PublicationGap", "is_connection_loss", "is_publication_missing", "publication_missing_error",
    "is_invalidated", "as_flash_error",
]


class PublicationGap(ReplicationError):
    """The server decoded part of the WAL without our publication and skipped its changes."""


def is_connection_loss(exc: BaseException) -> bool:
    # AdminShutdown (pg_terminate_backend, server shutdown) is an OperationalError too.
    return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))


def is_publication_missing(exc: BaseException) -> bool:
    # Before PostgreSQL 18, decoding a change after the publication was dropped fails.
    return isinstance(exc, psycopg2.errors.UndefinedObject) and "publication" in str(exc)


def publication_missing_error(exc: BaseException, slot: str) -> ReplicationError:
    error = ReplicationError(
        f"{one_line(exc)}: it was dropped while slot {slot!r} still needed it, and the server "
        "cannot decode that slot's changes past this point without it. Drop the slot (Driver.drop "
        "or 'flash-wal cleanup') and start again; changes made since the drop are lost"
    )
    error.__cause__ = exc
    return error


def is_invalidated(exc: psycopg2.Error) -> bool:
    message = str(exc)
    return "invalidated" in message or "can no longer get changes" in message


def as_flash_error(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, FlashError) or not isinstance(exc, Exception):
        return exc
    error = ReplicationError(f"{what}: {exc}".strip())
    error.__cause__ = exc
    return error
