"""Which operations of which table the server publishes: only those some listener can
get an event from (API.md, DriverConfig).

A table's INSERT is published when one of its listeners listens to INSERT, DELETE and
TRUNCATE likewise, and UPDATE when one listens to UPDATE, or to INSERT or DELETE with
conditions (an UPDATE can move a row into or out of them: a transition) or with a key
(an UPDATE that changes the key is delivered as a delete and an insert).

``publish`` is a property of a publication, not of a table in it, so each operation has
a publication of its own (``<prefix>-<slot>-insert`` and so on, see ``ownership``), and
a table is in the publications of the operations it needs: pgoutput publishes, for a
table, the union of the operations of the publications that hold it, and the row filters
of an operation come only from the publications of that operation. One publication per
operation, rather than one per set of operations, because every publication a session
names in ``publication_names`` must exist for all the WAL it decodes (before PostgreSQL
18 decoding fails without it; 18 skips the changes): all four are made before the slot,
and a listener attached later moves its table between them with ``ALTER PUBLICATION``,
which takes effect at the statement's WAL position, leaving the other tables alone.
"""

from typing import Any, Dict, Iterable, Mapping, Sequence, Set

from ...listener import Listener
from ...operations import Operation
from ...table_name import TableName
from .catalog import TableInfo

__all__ = ["keyed_tables", "needed_operations", "publication_contents", "stale_after_alter"]

_ROW_OPERATIONS = Operation.INSERT | Operation.DELETE


def keyed_tables(cursor: Any, infos: Iterable[TableInfo]) -> Set[TableName]:
    """The tables that have a key by default: a primary key or a replica identity index.

    What a listener's key is comes from its table (``ListenerConfig.primary_key``, where
    it exists, names one explicitly); a table with neither has no key unless configured,
    and its updates cannot change one, so INSERT and DELETE listeners without conditions
    need no UPDATE from it.
    """
    by_oid = {info.oid: info.name for info in infos}
    if not by_oid:
        return set()
    cursor.execute(
        "SELECT DISTINCT indrelid::int8 FROM pg_catalog.pg_index"
        " WHERE indrelid = ANY(%s::oid[]) AND (indisprimary OR indisreplident)",
        (list(by_oid),),
    )
    return {by_oid[oid] for (oid,) in cursor.fetchall()}


def needed_operations(listeners: Sequence[Listener], keyed: Set[TableName]) -> Dict[TableName, Operation]:
    """Each listened table's operations that some listener of it can get an event from
    (a table whose listeners have no callback yet maps to no operation)."""
    needed: Dict[TableName, Operation] = {}
    for listener in listeners:
        operations = listener.operations
        # An empty primary_key (its default) means the table's own key, if any.
        has_key = listener.table in keyed or bool(getattr(listener.config, "primary_key", None))
        if operations & _ROW_OPERATIONS and (listener.config.conditions or has_key):
            operations |= Operation.UPDATE
        needed[listener.table] = needed.get(listener.table, Operation(0)) | operations
    return needed


def publication_contents(
    publications: Mapping[str, Operation], needed: Mapping[TableName, Operation]
) -> Dict[str, Set[TableName]]:
    """The tables each publication holds: those that need one of its operations."""
    return {
        name: {table for table, operations in needed.items() if operations & published}
        for name, published in publications.items()
    }


def publish_option(operations: Operation) -> str:
    """The ``publish`` option of a publication of these operations."""
    return ", ".join((operation.name or "").lower() for operation in operations.atoms())


#: The first minor release of each major version whose decoding sees a publication
#: change at once (PostgreSQL 17.5, 16.9, 15.13, 14.18, 13.21, May 2025: "avoid data loss
#: when DDL operations that don't take a strong lock affect tables that are being
#: logically replicated").
_FIXED_MINOR = {13: 130021, 14: 140018, 15: 150013, 16: 160009, 17: 170005}


def stale_after_alter(server_version: int) -> bool:
    """Whether the server may decode changes committed after an ALTER PUBLICATION with
    the publication as it was before, when a transaction that was running during the
    ALTER commits after it (seen here on 16.2: a listener attached while other
    transactions ran missed its first change)."""
    major = server_version // 10000
    if major < min(_FIXED_MINOR):
        return True  # out of support before the fix
    return server_version < _FIXED_MINOR.get(major, 0)
