"""Where an event goes in JetStream: its subject and its message id. No I/O.

Subjects are ``<prefix>.<schema>.<table>.<operation>``. NATS subjects are tokens split
by ``.``, with ``*`` and ``>`` as wildcards and no whitespace, so a schema or table
name holding any of them (or ``%``, or anything outside printable ASCII) has those
characters percent-encoded, as in URLs: ``"My Table"`` is ``My%20Table``.
"""

from typing import Any, Iterable, Sequence

from ...errors import ConfigurationError
from ...table_name import TableName

__all__ = ["DEFAULT_SUBJECT_PREFIX", "subject_token", "subject_for", "subject_matches", "message_id", "check_prefix"]

DEFAULT_SUBJECT_PREFIX = "flash_wal"

_KEPT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-$+=@!~^&(),;:[]{}|'\"#")


def subject_token(name: str) -> str:
    """``name`` as one subject token."""
    return "".join(char if char in _KEPT else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
                   for char in name)


def check_prefix(prefix: str) -> str:
    """A subject prefix: one or more tokens, no wildcards."""
    tokens = prefix.split(".")
    if not prefix or any(not token or token in ("*", ">") or any(c.isspace() for c in token) for token in tokens):
        raise ConfigurationError(
            f"the subject prefix must be NATS subject tokens separated by dots, without wildcards "
            f"or spaces, such as 'flash_wal' or 'cdc.orders'; got {prefix!r}"
        )
    return prefix


def subject_for(prefix: str, table: TableName, operation: str) -> str:
    """``flash_wal.public.posts.insert``; ``operation`` as events print it (``"INSERT"``)."""
    return f"{prefix}.{subject_token(table.schema)}.{subject_token(table.name)}.{operation.lower()}"


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a stream's subject (with ``*`` and ``>`` wildcards) covers ``subject``."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(wanted) == len(tokens)


def any_matches(patterns: Iterable[str], subject: str) -> bool:
    return any(subject_matches(pattern, subject) for pattern in patterns)


def message_id(slot: str, table: str, commit_lsn: int, lsn: int, index: int, key: Sequence[Any] = ()) -> str:
    """The ``Nats-Msg-Id`` of an event: the same each time the event is delivered
    again, different for every other event of the slot.

    ``index`` tells apart events of one table at one position (the two halves of a
    key change; an event kind that is not a change, such as a backfill's rows, adds
    its ``key``). A ``TRUNCATE`` of several tables is one position too, hence the table.
    """
    text = f"{slot}:{table}:{commit_lsn:X}:{lsn:X}:{index}"
    return text if not key else f"{text}:{key!r}"
