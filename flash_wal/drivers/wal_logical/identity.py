"""Replica identities that keep the application's own writes working.

Once a table is in a publication that publishes updates and deletes, the server refuses
the application's UPDATE and DELETE on it unless the row's identity can be written to
the WAL: a primary key (REPLICA IDENTITY DEFAULT), a chosen unique index (USING INDEX),
or the whole row (FULL). The server checks this on the table that holds the row, so for
a partitioned table on every leaf partition, whatever the partitioned table says, and a
partition created or attached later starts with DEFAULT. On PostgreSQL 18 a FULL
identity also holds the generated columns, and the server refuses the writes unless
they are published: the publication publishes the stored ones, and a virtual one can
never be published.

:func:`check_replica_identities` finds every such case before anything is changed, and
a start() that fails after setting ``REPLICA IDENTITY FULL`` puts every table (and
partition) back the way it was (:func:`restore_replica_identities`).
"""

import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence

import attr
from psycopg2 import sql

from ...errors import ConfigurationError
from ...table_name import TableName
from .catalog import SLOT_LOCK, TableInfo, table_identifier

logger = logging.getLogger(__name__)

#: The name of the event trigger, and of its function in schema public, that gives a
#: partition created or attached later the REPLICA IDENTITY FULL of an ancestor.
PARTITION_IDENTITY_TRIGGER = "flash_wal_partition_identity"

#: What flash_wal installs (docs/server-setup.rst shows this text).
#: It runs as the role running the DDL, who owns the new partition; a partition that
#: role may not alter is left with a WARNING rather than failing the DDL.
PARTITION_IDENTITY_SQL = """\
CREATE FUNCTION public.flash_wal_partition_identity() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $body$
DECLARE
  partition regclass;
BEGIN
  -- Every partition, at any level below the table just created or altered, that is
  -- not FULL while one of its ancestors is.
  FOR partition IN
    SELECT DISTINCT tree.relid
    FROM pg_event_trigger_ddl_commands() AS command,
         pg_partition_tree(command.objid) AS tree
    JOIN pg_class AS c ON c.oid = tree.relid
    WHERE command.classid = 'pg_class'::regclass AND c.relkind IN ('r', 'p')
      AND c.relispartition AND c.relreplident <> 'f'
      AND EXISTS (SELECT FROM pg_partition_ancestors(tree.relid) AS a
                  JOIN pg_class AS ancestor ON ancestor.oid = a.relid
                  WHERE ancestor.relreplident = 'f')
  LOOP
    BEGIN
      EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', partition);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE WARNING 'could not set REPLICA IDENTITY FULL on partition %: %', partition, SQLERRM;
    END;
  END LOOP;
END
$body$;
CREATE EVENT TRIGGER flash_wal_partition_identity ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
  EXECUTE FUNCTION public.flash_wal_partition_identity();
"""

#: Second key of the advisory lock two clients installing the trigger at once take.
_TRIGGER_LOCK = 0x70617274  # "part"


@attr.s(frozen=True, slots=True)
class _Relation:
    """A listened table, or one of its partitions at any level."""

    listened: TableName = attr.ib()
    name: TableName = attr.ib()
    kind: str = attr.ib()
    identity: str = attr.ib()
    has_primary_key: bool = attr.ib()
    has_identity_index: bool = attr.ib()
    virtual_generated: Sequence[str] = attr.ib()

    def describe(self) -> str:
        return str(self.name) if self.name == self.listened else f"partition {self.name} of {self.listened}"


def _relations(cursor: Any, oids: Sequence[int], server_version: int) -> List[_Relation]:
    """The listened tables and every partition of theirs (PostgreSQL 12 and later)."""
    # pg_partition_tree() gives nothing for a table that is not partitioned.
    tree = sql.SQL("(SELECT w.oid AS relid" + (
        " UNION SELECT relid FROM pg_catalog.pg_partition_tree(w.oid))" if server_version >= 120000 else ")"))
    virtual = sql.SQL("a.attgenerated = 'v'" if server_version >= 180000 else "false")
    # A deferrable or invalid primary key is no identity (the server skips it too).
    cursor.execute(
        sql.SQL(
            "SELECT w.oid::int8, n.nspname::text, c.relname::text, c.relkind::text, c.relreplident::text,"
            " EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary"
            "         AND i.indimmediate AND i.indisvalid),"
            " EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident"
            "         AND i.indisvalid),"
            " ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid"
            "       AND a.attnum > 0 AND NOT a.attisdropped AND {virtual} ORDER BY a.attnum)"
            " FROM unnest(%s::oid[]) AS w(oid), LATERAL {tree} AS t"
            " JOIN pg_catalog.pg_class c ON c.oid = t.relid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " ORDER BY w.oid, c.oid <> w.oid, n.nspname, c.relname"
        ).format(tree=tree, virtual=virtual),
        (list(oids),),
    )
    roots: Dict[int, TableName] = {}
    result = []
    for oid, schema, name, kind, identity, has_pk, has_index, virtual_columns in cursor.fetchall():
        relation_name = TableName(schema, name)
        root = roots.setdefault(oid, relation_name)  # ORDER BY puts the listened table first
        result.append(_Relation(root, relation_name, kind, identity, has_pk, has_index, tuple(virtual_columns)))
    return result


def is_superuser(cursor: Any) -> bool:
    cursor.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
    row = cursor.fetchone()
    return bool(row and row[0])


def partition_identity_trigger(cursor: Any) -> Optional[str]:
    """'enabled', 'disabled', or None when the event trigger is not installed."""
    cursor.execute("SELECT evtenabled FROM pg_catalog.pg_event_trigger WHERE evtname = %s",
                   (PARTITION_IDENTITY_TRIGGER,))
    row = cursor.fetchone()
    if row is None:
        return None
    return "disabled" if row[0] == "D" else "enabled"


def check_replica_identities(
    cursor: Any, infos: Iterable[TableInfo], *, full: bool, server_version: int
) -> bool:
    """Raise ConfigurationError, naming each table and what to do, when publishing the
    tables (and, with ``full``, setting REPLICA IDENTITY FULL on them and all their
    partitions) would make the server refuse the application's UPDATE or DELETE on one
    of them, now or on a partition created later, or would give a partition created
    later an identity other than its partitioned table's. Changes nothing.

    Returns whether the partition identity event trigger is to be installed first.
    """
    infos = list(infos)
    if not infos:
        return False
    relations = _relations(cursor, [info.oid for info in infos], server_version)
    problems = [problem for relation in relations for problem in _write_problems(relation, full)]
    partitioned = [r for r in relations if r.kind == "p" and r.name == r.listened and server_version >= 130000]
    install = False
    if partitioned:
        trigger = partition_identity_trigger(cursor)
        superuser = is_superuser(cursor)
        install = full and trigger is None and superuser
        covered = trigger == "enabled" or install
        for root in partitioned:
            problem = _future_partition_problem(root, trigger, covered, full)
            if problem:
                problems.append(problem)
    if problems:
        raise ConfigurationError(
            "listening as configured would break the application's writes or the events: " + "; ".join(problems)
        )
    return install


def _write_problems(relation: _Relation, full: bool) -> List[str]:
    if relation.kind != "r":
        return []  # the server checks the partitions that hold the rows, not a partitioned table
    identity = "f" if full else relation.identity
    what = relation.describe()
    if identity == "f" and relation.virtual_generated:
        columns = ", ".join(map(repr, relation.virtual_generated))
        fix = ("use DriverConfig(replica_identity_full=False) with a primary key" if full
               else f"run ALTER TABLE {relation.name} REPLICA IDENTITY DEFAULT (with a primary key)")
        return [
            f"{what} has the virtual generated column {columns}, which the server cannot publish, "
            "and with REPLICA IDENTITY FULL it refuses UPDATE and DELETE on a published table "
            f"with one. Make the column STORED, or {fix}"
        ]
    if identity == "n":
        why = "has REPLICA IDENTITY NOTHING"
    elif identity == "d" and not relation.has_primary_key:
        why = "has no primary key"
    elif identity == "i" and not relation.has_identity_index:
        why = "has lost the index of its REPLICA IDENTITY USING INDEX"
    else:
        return []
    return [
        f"{what} {why}, so the server would refuse the application's UPDATE and DELETE on it "
        "while it is published. Add a primary key, or set REPLICA IDENTITY USING INDEX (a unique "
        "index on NOT NULL columns), or use DriverConfig(replica_identity_full=True)"
    ]


def _future_partition_problem(root: _Relation, trigger: Optional[str], covered: bool, full: bool) -> Optional[str]:
    """What a partition created or attached later would break, unless the trigger gives it
    FULL: without a primary key on the parent it has no identity and the server refuses
    its UPDATE and DELETE; with one, its old rows would hold the key only while the
    partitioned table's Relation says FULL, so events would show the other columns as
    NULL."""
    if full or root.identity == "f":
        if covered:
            return None
        if trigger == "disabled":
            fix = f"enable the event trigger {PARTITION_IDENTITY_TRIGGER} (ALTER EVENT TRIGGER ... ENABLE)"
        else:
            fix = (f"have a superuser install the event trigger {PARTITION_IDENTITY_TRIGGER} that gives "
                   "new partitions REPLICA IDENTITY FULL (see the server set-up docs), or run flash_wal "
                   "as a superuser, which installs it")
        without = ("use DriverConfig(replica_identity_full=False) with a primary key on it" if full
                   else f"ALTER TABLE {root.name} REPLICA IDENTITY DEFAULT with a primary key on it")
        harm = ("its UPDATE and DELETE events would lack the old row" if root.has_primary_key
                else "the server would refuse the application's UPDATE and DELETE on it")
        return (f"{root.name} is partitioned, and a partition created or attached later would not get "
                f"REPLICA IDENTITY FULL: {harm}. To fix, {fix}; or {without}")
    if root.has_primary_key:
        return None
    return (
        f"{root.name} is partitioned and has no primary key, so a partition created or attached "
        "later would have no replica identity and the server would refuse the application's "
        f"UPDATE and DELETE on it. Add a primary key to {root.name}, or use "
        f"DriverConfig(replica_identity_full=True) with the event trigger {PARTITION_IDENTITY_TRIGGER} "
        "(see the server set-up docs)"
    )


def install_partition_identity_trigger(cursor: Any) -> None:
    """Install the event trigger unless another client just did (superusers only)."""
    cursor.execute("BEGIN")
    try:
        cursor.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s, %s)", (SLOT_LOCK, _TRIGGER_LOCK))
        if partition_identity_trigger(cursor) is None:
            logger.info("installing the event trigger %s: partitions created or attached later get "
                        "the REPLICA IDENTITY FULL of their parent", PARTITION_IDENTITY_TRIGGER)
            cursor.execute(PARTITION_IDENTITY_SQL)
        cursor.execute("COMMIT")
    except BaseException:
        if not cursor.connection.closed:
            cursor.execute("ROLLBACK")
        raise


def set_replica_identity_full(cursor: Any, infos: Iterable[TableInfo], server_version: int) -> List[TableName]:
    """Set REPLICA IDENTITY FULL on the tables and on every partition of theirs, at every
    level; returns those that were not FULL before."""
    infos = list(infos)
    changed = []
    if infos:
        for relation in _relations(cursor, [info.oid for info in infos], server_version):
            if relation.identity != "f" and relation.name not in changed:
                logger.info("setting REPLICA IDENTITY FULL on %s", relation.describe())
                cursor.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(table_identifier(relation.name)))
                changed.append(relation.name)
    return changed

_CLAUSES = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}  # "i": USING INDEX <index>


@attr.s(frozen=True, slots=True)
class ReplicaIdentity:
    oid: int = attr.ib()
    table: TableName = attr.ib()
    #: pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex)
    kind: str = attr.ib()
    #: The index of REPLICA IDENTITY USING INDEX.
    index: Optional[str] = attr.ib()


def replica_identities(cursor: Any, oids: Iterable[int]) -> List[ReplicaIdentity]:
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


def restore_replica_identities(cursor: Any, before: List[ReplicaIdentity]) -> None:
    """Set each table's identity back to ``before`` where it changed since."""
    now = {identity.oid: identity for identity in replica_identities(cursor, (i.oid for i in before))}
    for old in before:
        current = now.get(old.oid)
        if current is None or (current.kind, current.index) == (old.kind, old.index):
            continue  # dropped meanwhile, or unchanged
        clause: sql.Composable
        if old.kind == "i" and old.index is not None:
            clause = sql.SQL("USING INDEX {}").format(sql.Identifier(old.index))
        else:
            clause = sql.SQL(_CLAUSES.get(old.kind, "DEFAULT"))
        logger.info("putting the replica identity of %s back to %s", old.table, clause.as_string(cursor))
        cursor.execute(sql.SQL("ALTER TABLE {}.{} REPLICA IDENTITY {}").format(
            sql.Identifier(old.table.schema), sql.Identifier(old.table.name), clause))
