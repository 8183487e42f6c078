"""The replica identity of listened tables as it was before start() changed it.

A start() that fails after setting ``REPLICA IDENTITY FULL`` puts every table (and
partition) back the way it was, so that a failed start leaves nothing behind.
"""

import logging
from typing import Iterable, List, Optional

import attr
from psycopg2 import sql

from ...listener import TableName

logger = logging.getLogger(__name__)

_CLAUSES = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}  # "i": USING INDEX <index>


@attr.s(frozen=True, slots=True)
class ReplicaIdentity:
    oid: int = attr.ib()
    table: TableName = attr.ib()
    #: pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex)
    kind: str = attr.ib()
    #: The index of REPLICA IDENTITY USING INDEX.
    index: Optional[str] = attr.ib()


def replica_identities(cursor, oids: Iterable[int]) -> List[ReplicaIdentity]:
    """The identity of each table and of each of its partitions (or inheritors)."""
    cursor.execute(
        "WITH RECURSIVE tree(oid) AS ("
        "  SELECT unnest(%s::oid[])"
        "  UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid"
        ")"
        " SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relreplident::text,"
        "  (SELECT ic.relname::text FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid"
        "   WHERE x.indrelid = c.oid AND x.indisreplident)"
        " FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1",
        (list(oids),),
    )
    return [ReplicaIdentity(oid, TableName(schema, name), kind, index)
            for oid, schema, name, kind, index in cursor.fetchall()]


def restore_replica_identities(cursor, before: List[ReplicaIdentity]) -> None:
    """Set each table's identity back to ``before`` where it changed since."""
    now = {identity.oid: identity for identity in replica_identities(cursor, (i.oid for i in before))}
    for old in before:
        current = now.get(old.oid)
        if current is None or (current.kind, current.index) == (old.kind, old.index):
            continue  # dropped meanwhile, or unchanged
        if old.kind == "i" and old.index is not None:
            clause = sql.SQL("USING INDEX {}").format(sql.Identifier(old.index))
        else:
            clause = sql.SQL(_CLAUSES.get(old.kind, "DEFAULT"))
        logger.info("putting the replica identity of %s back to %s", old.table, clause.as_string(cursor))
        cursor.execute(sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY {}").format(
            sql.Identifier(old.table.schema), sql.Identifier(old.table.name), clause))
