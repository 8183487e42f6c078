"""The kinds of row change a listener can subscribe to."""

import enum
import re

from .errors import ConfigurationError


class Operation(enum.IntFlag):
    """A row operation, or a combination of them (``Operation.INSERT | Operation.UPDATE``)."""

    INSERT = 1
    UPDATE = 2
    DELETE = 4
    TRUNCATE = 8
    #: The four kinds of change; not READ, so that code written for changes never
    #: receives existing rows by surprise.
    ALL = 15
    #: A row as a backfill read it (:class:`~flash_wal.ReadEvent`).
    READ = 16

    @classmethod
    def from_name(cls, name: str) -> "Operation":
        """``Operation.from_name("insert")`` -> ``Operation.INSERT`` (case-insensitive)."""
        try:
            return cls[name.strip().upper()]
        except (KeyError, AttributeError):
            choices = ", ".join(str(op).lower() for op in _ATOMS)
            raise ConfigurationError(
                f"unknown operation {name!r}: use one of {choices} or all"
            ) from None

    @classmethod
    def parse(cls, text: str) -> "Operation":
        """``Operation.parse("insert,update")`` (or ``"insert|update"``) -> their union."""
        result = cls(0)
        for name in re.split(r"[,|]", text):
            result |= cls.from_name(name)
        return result

    def atoms(self) -> "tuple[Operation, ...]":
        """The single operations this flag combines, in declaration order."""
        return tuple(op for op in _ATOMS if op & self)

    def __str__(self) -> str:
        return " | ".join(op.name or "" for op in self.atoms()) or "0"  # atoms always have one

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


_ATOMS = (Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.TRUNCATE, Operation.READ)
