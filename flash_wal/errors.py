"""The exceptions flash_wal raises. Every one derives from :class:`FlashError`."""


class FlashError(Exception):
    """Base class of every error raised by flash_wal."""


class ConfigurationError(FlashError, ValueError):
    """The configuration is invalid, or the server cannot be used as configured.

    The message says what to change.
    """


class SlotInUseError(ConfigurationError):
    """The replication slot is held by another running client, usually the same
    program in another process. Give each running client its own ``replication_slot``
    and ``publication_slot_prefix``, or let one process run the client."""


class ProtocolError(FlashError):
    """A pgoutput frame could not be decoded."""


class ReplicationError(FlashError):
    """The replication stream failed while running (connection lost, server error)."""


class SlotInvalidatedError(ReplicationError):
    """The server invalidated the replication slot (``max_slot_wal_keep_size``):
    the changes it kept are gone. Drop the slot and start again."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (libpq's span several), or its type's name."""
    return " ".join(str(exc).split()) or type(exc).__name__
