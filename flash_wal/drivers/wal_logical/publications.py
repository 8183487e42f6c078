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

from typing import Dict, Mapping, Sequence, Set

from ...listener import Listener
from ...operations import Operation
from ...table_name import TableName

__all__ = ["needed_operations", "publication_contents", "stale_after_alter"]

_ROW_OPERATIONS = Operation.INSERT | Operation.DELETE


def needed_operations(listeners: Sequence[Listener]) -> Dict[TableName, Operation]:
    """Each listened table's operations that some listener of it can get an event from
    (a table whose listeners have no callback yet maps to no operation)."""
    needed: Dict[TableName, Operation] = {}
    for listener in listeners:
        operations = listener.operations
        if operations & Operation.READ:
            # A backfill tells which rows its chunks hold stale from the changes of the
            # table: it must see every one of them (see flash_wal.backfill).
            operations = Operation.ALL
        # INSERT and DELETE listeners get events from UPDATEs too: transitions under
        # conditions, and key changes, which even a table without a key today can have
        # after a schema change (the key follows each Relation message), so always.
        if operations & _ROW_OPERATIONS:
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
