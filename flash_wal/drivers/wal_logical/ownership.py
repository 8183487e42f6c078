"""Which server objects belong to which configuration.

A configuration is a ``(publication_slot_prefix, replication_slot)`` pair. Its slot is
named ``replication_slot``; its publications ``<prefix>-<slot>-<operation>``, one per
operation (``insert``, ``update``, ``delete``, ``truncate``: see :mod:`.publications`):
both names are made of ``[a-z0-9_]``, so the first hyphen tells where the prefix ends
and no two configurations share a publication (with an underscore, prefix ``a`` and
slot ``b_s`` met prefix ``a_b`` and slot ``s``). Earlier versions made one publication
for every operation: ``<prefix>-<slot>``, and in flash_wal 0.1.0 ``<prefix>_<slot>``; a
durable slot of that time is still resumed with it (see :func:`legacy_publication_name`).

flash_wal drops or changes only what it can tell it made: every publication it creates
carries a comment (:class:`PublicationOwner`) naming the configuration, and whether that
configuration's slot is durable.
"""

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence

import attr
from ...errors import ConfigurationError
from ...operations import Operation

__all__ = [
    "PUBLICATION_SEPARATOR", "PublicationOwner", "SlotReport", "check_publication", "check_slot_is_droppable", "foreign_slot",
    "legacy_publication_name", "operation_publication_names", "prefix_report", "publication_name", "slot_report",
]

#: Between publication_slot_prefix and replication_slot in a publication's name; neither
#: name may contain it.
PUBLICATION_SEPARATOR = "-"


def publication_name(prefix: str, slot: str) -> str:
    return f"{prefix}{PUBLICATION_SEPARATOR}{slot}"


#: The last part of the name of each operation's publication.
OPERATION_SUFFIXES = {
    Operation.INSERT: "insert", Operation.UPDATE: "update", Operation.DELETE: "delete", Operation.TRUNCATE: "truncate",
}


def operation_publication_names(prefix: str, slot: str) -> Dict[Operation, str]:
    """The publication of each operation: the server publishes an operation of a table
    when the table is in that operation's publication."""
    base = publication_name(prefix, slot)
    return {operation: f"{base}{PUBLICATION_SEPARATOR}{suffix}" for operation, suffix in OPERATION_SUFFIXES.items()}


def legacy_publication_name(prefix: str, slot: str) -> str:
    """The name flash_wal 0.1.0 gave the publication: ambiguous, see the module docstring."""
    return f"{prefix}_{slot}"


@attr.s(frozen=True, slots=True, kw_only=True)
class PublicationOwner:
    """The configuration a publication was made for, as its comment says."""

    prefix: str = attr.ib()
    slot: str = attr.ib()
    #: Whether the configuration's slot is persistent; a client with durable=False may
    #: drop an inactive slot of its name only when its publication says so.
    durable: bool = attr.ib()

    _MARKER = re.compile(
        r"made by flash_wal for publication_slot_prefix=([a-z0-9_]+) replication_slot=([a-z0-9_]+)"
        r" \((durable|temporary) slot\)"
    )

    def marker(self) -> str:
        kind = "durable" if self.durable else "temporary"
        return f"made by flash_wal for publication_slot_prefix={self.prefix} replication_slot={self.slot} ({kind} slot)"

    @classmethod
    def from_marker(cls, comment: Optional[str]) -> "Optional[PublicationOwner]":
        match = cls._MARKER.fullmatch(comment or "")
        if match is None:
            return None
        return cls(prefix=match.group(1), slot=match.group(2), durable=match.group(3) == "durable")

    def made(self, prefix: str, slot: str) -> bool:
        return (self.prefix, self.slot) == (prefix, slot)


def check_publication(cursor: Any, name: str, prefix: str, slot: str) -> Optional[PublicationOwner]:
    """Who made publication ``name``: None when there is no such publication.

    Raises ConfigurationError when it exists and flash_wal did not make it for
    ``(prefix, slot)``: it is someone else's, so flash_wal neither replaces nor alters it.
    """
    cursor.execute(
        "SELECT pg_catalog.obj_description(oid, 'pg_publication') FROM pg_catalog.pg_publication WHERE pubname = %s",
        (name,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    owner = PublicationOwner.from_marker(row[0])
    if owner is None or not owner.made(prefix, slot):
        said = "has no comment" if not row[0] else f"has the comment {row[0]!r}"
        raise ConfigurationError(
            f"publication {name!r} exists but flash_wal did not make it for publication_slot_prefix="
            f"{prefix!r} and replication_slot={slot!r} (it {said}), so it is left alone. Choose another "
            f"publication_slot_prefix or replication_slot, or, if it is not needed, drop it: "
            f'DROP PUBLICATION "{name}"'
        )
    return owner


@attr.s(frozen=True, slots=True, kw_only=True)
class SlotReport:
    """What the server holds for one replication slot name of a prefix."""

    slot: str = attr.ib()
    #: The configuration's publications, sorted; empty when there is none.
    publications: Sequence[str] = attr.ib()
    #: The one publication has the name flash_wal 0.1.0 gave it (``<prefix>_<slot>``).
    legacy_publication: bool = attr.ib()
    tables: Sequence[str] = attr.ib()
    exists: bool = attr.ib()
    temporary: Optional[bool] = attr.ib()
    active_pid: Optional[int] = attr.ib()
    #: The server's WAL position minus the slot's confirmed position.
    lag_bytes: Optional[int] = attr.ib()
    wal_status: Optional[str] = attr.ib()
    plugin: Optional[str] = attr.ib()
    database: Optional[str] = attr.ib()


def prefix_report(cursor: Any, prefix: str, slots: Iterable[str] = ()) -> List[SlotReport]:
    """The configurations of ``prefix``: each slot with a publication
    ``<prefix>-<slot>-<operation>`` (or ``<prefix>-<slot>``, as earlier versions named
    it), and each of the named ``slots``.

    A publication with the old name ``<prefix>_<slot>`` counts only when nothing else
    could have made it: its slot exists (or is named) and no other slot ``s`` completes
    its name as ``<another prefix>_<s>``. So the objects of prefix ``a_b`` are never
    reported as prefix ``a``'s.
    """
    cursor.execute(
        "WITH named_pubs AS ("
        "  SELECT pubname::text, substr(pubname, length(%(prefix)s) + 2) AS rest"
        "  FROM pg_catalog.pg_publication WHERE left(pubname, length(%(prefix)s) + 1) = %(prefix)s || %(sep)s"
        "), pubs AS ("
        "  SELECT pubname, split_part(rest, %(sep)s, 1) AS slot_name FROM named_pubs"
        "  WHERE rest = split_part(rest, %(sep)s, 1)"
        "   OR substr(rest, length(split_part(rest, %(sep)s, 1)) + 2) = ANY(%(suffixes)s::text[])"
        "), candidates AS ("
        "  SELECT slot_name::text FROM pg_catalog.pg_replication_slots UNION SELECT unnest(%(slots)s::text[])"
        "), legacy AS ("
        "  SELECT c.slot_name, p.pubname::text FROM candidates c"
        "  JOIN pg_catalog.pg_publication p ON p.pubname = %(prefix)s || '_' || c.slot_name"
        "  WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots o"
        "    WHERE o.slot_name <> c.slot_name AND length(p.pubname) > length(o.slot_name) + 1"
        "    AND right(p.pubname, length(o.slot_name) + 1) = '_' || o.slot_name)"
        "), named AS ("
        "  SELECT slot_name FROM pubs UNION SELECT unnest(%(slots)s::text[])"
        "  UNION SELECT legacy.slot_name FROM legacy JOIN pg_catalog.pg_replication_slots s USING (slot_name)"
        "), chosen AS ("
        "  SELECT n.slot_name, CASE WHEN EXISTS (SELECT 1 FROM pubs WHERE pubs.slot_name = n.slot_name)"
        "    THEN ARRAY(SELECT pubname FROM pubs WHERE pubs.slot_name = n.slot_name ORDER BY 1)"
        "    ELSE ARRAY(SELECT legacy.pubname FROM legacy WHERE legacy.slot_name = n.slot_name) END AS pubnames"
        "  FROM named n"
        ")"
        " SELECT c.slot_name, c.pubnames,"
        "  cardinality(c.pubnames) = 1 AND c.pubnames[1] = %(prefix)s || '_' || c.slot_name,"
        "  ARRAY(SELECT DISTINCT t.schemaname || '.' || t.tablename FROM pg_catalog.pg_publication_tables t"
        "        WHERE t.pubname = ANY(c.pubnames) ORDER BY 1),"
        "  s.slot_name IS NOT NULL, s.temporary, s.active_pid,"
        "  (pg_catalog.pg_current_wal_lsn() - s.confirmed_flush_lsn)::int8,"
        "  pg_catalog.to_jsonb(s) ->> 'wal_status', s.plugin::text, s.database::text"
        " FROM chosen c LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = c.slot_name"
        " ORDER BY 1",
        {"prefix": prefix, "slots": list(slots), "sep": PUBLICATION_SEPARATOR,
         "suffixes": list(OPERATION_SUFFIXES.values())},
    )
    return [
        SlotReport(slot=slot, publications=tuple(publications), legacy_publication=legacy, tables=tuple(tables),
                   exists=exists, temporary=temporary, active_pid=pid, lag_bytes=lag, wal_status=wal_status,
                   plugin=plugin, database=database)
        for slot, publications, legacy, tables, exists, temporary, pid, lag, wal_status, plugin, database
        in cursor.fetchall()
    ]


def slot_report(cursor: Any, prefix: str, slot: str) -> SlotReport:
    """What the server holds for the configuration ``(prefix, slot)``."""
    return next(report for report in prefix_report(cursor, prefix, [slot]) if report.slot == slot)


def foreign_slot(cursor: Any, slot: str) -> Optional[str]:
    """What the slot is, when it is not what flash_wal makes (a persistent pgoutput slot
    of this database); None when it is, or when there is no such slot."""
    cursor.execute(
        "SELECT slot_type::text, plugin::text, database::text, temporary, current_database()::text"
        " FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
        (slot,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    slot_type, plugin, database, temporary, current = row
    if plugin == "pgoutput" and database == current and not temporary:
        return None
    kind = "temporary" if temporary else "persistent"
    if slot_type == "physical":
        return f"a {kind} physical slot"
    return f"a {kind} logical slot of plugin {plugin!r} in database {database!r} (this is {current!r})"


def drop_slot_sql(slot: str) -> str:
    """The statement that drops the slot, for messages ([a-z0-9_] needs no quoting)."""
    return f"SELECT pg_drop_replication_slot('{slot}')"


def check_slot_is_droppable(cursor: Any, slot: str) -> None:
    """Raise ConfigurationError when the slot exists and is not of a kind flash_wal makes."""
    foreign = foreign_slot(cursor, slot)
    if foreign is not None:
        raise ConfigurationError(
            f"replication slot {slot!r} is {foreign}, not one flash_wal makes, so it is left alone; "
            f"if it is not needed, drop it yourself: {drop_slot_sql(slot)}"
        )
