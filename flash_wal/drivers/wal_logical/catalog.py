"""The SQL the driver runs against the server's catalogs: checks, tables, publications, slots, locks.

Every function takes a cursor of an autocommit (non-replication) connection. Names are
quoted with ``psycopg2.sql.Identifier`` and values passed as parameters, always.
"""

import contextlib
import logging
import time
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Set, Tuple

import attr
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from ...errors import ConfigurationError, SlotInvalidatedError
from ...listener import Listener
from ...table_name import TableName
from .ownership import PublicationOwner

logger = logging.getLogger(__name__)

PUBLISH_ALL = "insert, update, delete, truncate"


@attr.s(frozen=True, slots=True)
class TableInfo:
    name: TableName = attr.ib()
    oid: int = attr.ib()
    columns: Sequence[str] = attr.ib()
    replica_identity: str = attr.ib()


def server_version(cursor: Any) -> int:
    cursor.execute("SELECT current_setting('server_version_num')::int")
    version: int = cursor.fetchone()[0]
    return version


def protocol_version_for(version_num: int) -> int:
    """The highest pgoutput protocol version a server supports."""
    if version_num >= 160000:
        return 4
    if version_num >= 150000:
        return 3
    if version_num >= 140000:
        return 2
    return 1


def wal_sender_timeout_ms(cursor: Any) -> int:
    """The server's wal_sender_timeout in milliseconds (0: none)."""
    cursor.execute("SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'wal_sender_timeout'")
    timeout_ms: int = cursor.fetchone()[0]
    return timeout_ms


def current_wal_lsn(cursor: Any) -> int:
    cursor.execute("SELECT (pg_catalog.pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
    lsn: int = cursor.fetchone()[0]
    return lsn


def check_server(cursor: Any, slot: str) -> None:
    """Raise ConfigurationError, saying what to change, when the server cannot serve us."""
    cursor.execute(
        "SELECT current_setting('wal_level'),"
        " current_setting('max_replication_slots')::int,"
        " current_setting('max_wal_senders')::int,"
        " current_user,"
        " (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)"
        # Amazon RDS grants replication through membership in rds_replication.
        "  OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication'"
        "             AND pg_catalog.pg_has_role(current_user, oid, 'member')),"
        " (SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name <> %s),"
        " (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'walsender')",
        (slot,),
    )
    wal_level, max_slots, max_senders, user, can_replicate, other_slots, senders = cursor.fetchone()
    if wal_level != "logical":
        raise ConfigurationError(
            f"the server's wal_level is {wal_level!r}; logical replication needs 'logical'. "
            "Run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) "
            "and restart the server"
        )
    if not can_replicate:
        raise ConfigurationError(
            f"the role {user!r} may not start replication; run ALTER ROLE {user} REPLICATION "
            "as a superuser, or connect as a role that has the REPLICATION attribute"
        )
    if other_slots >= max_slots:
        raise ConfigurationError(
            f"no free replication slot: all max_replication_slots={max_slots} are in use. "
            "Drop unused slots (SELECT pg_drop_replication_slot(slot_name) FROM "
            "pg_replication_slots WHERE NOT active) or raise max_replication_slots and restart"
        )
    if senders >= max_senders:
        raise ConfigurationError(
            f"no free WAL sender: all max_wal_senders={max_senders} are busy. "
            "Stop other replication clients or raise max_wal_senders and restart the server"
        )


def describe_tables(cursor: Any, tables: Iterable[TableName]) -> Dict[TableName, TableInfo]:
    """Look the tables up; raise ConfigurationError naming any that does not exist."""
    wanted = sorted(set(tables), key=str)
    if not wanted:
        return {}
    cursor.execute(
        "SELECT n.nspname, c.relname, c.oid::int8, c.relreplident,"
        " ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a"
        "       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        "       ORDER BY a.attnum)"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " JOIN unnest(%s::text[], %s::text[]) AS w(nspname, relname)"
        "   ON w.nspname = n.nspname::text AND w.relname = c.relname::text"
        " WHERE c.relkind IN ('r', 'p')",
        ([t.schema for t in wanted], [t.name for t in wanted]),
    )
    found = {
        TableName(schema, name): TableInfo(TableName(schema, name), oid, tuple(columns), replident)
        for schema, name, oid, replident, columns in cursor.fetchall()
    }
    missing = [str(t) for t in wanted if t not in found]
    if missing:
        raise ConfigurationError(
            f"table {', '.join(missing)} does not exist (or is not a table). Create it, or fix "
            "the listener's table name: unquoted names are folded to lower case, so write "
            "'\"MyTable\"' for a mixed-case name"
        )
    return found


def check_listener_columns(listener: Listener, info: TableInfo) -> None:
    columns = set(info.columns)
    config = listener.config
    unknown = [f for f in config.fields if f not in columns]
    unknown += [c.column for c in config.conditions if c.column not in columns]
    if unknown:
        raise _no_such_column(info, unknown, f"fix the fields or conditions of {listener!r}")


def _no_such_column(info: TableInfo, unknown: Sequence[str], fix: str) -> ConfigurationError:
    return ConfigurationError(
        f"table {info.name} has no column {', '.join(repr(u) for u in unknown)} "
        f"(it has {', '.join(info.columns)}); {fix}"
    )


def table_identifier(table: TableName) -> sql.Composable:
    return sql.SQL(".").join([sql.Identifier(table.schema), sql.Identifier(table.name)])


@contextlib.contextmanager
def transaction(cursor: Any) -> Iterator[None]:
    """One transaction around the block, or the one already open: changes to several
    publications take effect together, at its commit's WAL position."""
    if cursor.connection.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        yield
        return
    cursor.execute("BEGIN")
    try:
        yield
    except BaseException:
        if not cursor.connection.closed:
            cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")


def create_publication(
    cursor: Any, name: str, tables: Iterable[TableName], server_version: int, owner: PublicationOwner,
    publish: str = PUBLISH_ALL, filters: Mapping[TableName, str] = {},
) -> None:
    """Create the publication afresh, replacing a leftover of the same name, and mark
    it as ``owner``'s (the caller has checked that a leftover is that owner's).

    From PostgreSQL 13, changes to a partition are published as changes of the
    partitioned table, so a listener on the partitioned table hears them. From
    PostgreSQL 18, stored generated columns are published: with REPLICA IDENTITY FULL
    the server refuses UPDATE and DELETE on a table whose generated columns are not.
    """
    tables = sorted(set(tables), key=str)
    with transaction(cursor):
        cursor.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
        create = sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(name))
        if tables:
            create += sql.SQL(" FOR TABLE {}").format(_table_list(tables, filters))
        create += sql.SQL(" WITH (publish = {}").format(sql.Literal(publish))
        if server_version >= 130000:
            create += sql.SQL(", publish_via_partition_root = true")
        if server_version >= 180000:
            create += sql.SQL(", publish_generated_columns = stored")
        create += sql.SQL(")")
        cursor.execute(create)
        cursor.execute(sql.SQL("COMMENT ON PUBLICATION {} IS %s").format(sql.Identifier(name)), (owner.marker(),))


def ensure_publication_options(cursor: Any, name: str, server_version: int) -> None:
    """Give a publication made by an earlier version the options create_publication sets."""
    if server_version < 180000:
        return
    cursor.execute("SELECT pubgencols FROM pg_catalog.pg_publication WHERE pubname = %s", (name,))
    row = cursor.fetchone()
    if row is not None and row[0] != "s":
        cursor.execute(
            sql.SQL("ALTER PUBLICATION {} SET (publish_generated_columns = stored)").format(sql.Identifier(name))
        )


def alter_publication(
    cursor: Any, name: str, add: Iterable[TableName], drop: Iterable[TableName], filters: Mapping[TableName, str] = {}
) -> None:
    """Drop tables, then add tables (with their row filters): a table in both gets its
    new filter."""
    add, drop = sorted(set(add), key=str), sorted(set(drop), key=str)
    publication = sql.Identifier(name)
    if drop:
        cursor.execute(
            sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                publication, sql.SQL(", ").join(map(table_identifier, drop))
            )
        )
    if add:
        cursor.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(publication, _table_list(add, filters)))


def _table_list(tables: Sequence[TableName], filters: Mapping[TableName, str]) -> sql.Composable:
    # A filter is SQL text that row_filters composed of identifiers and literals.
    return sql.SQL(", ").join(
        table_identifier(table) + (sql.SQL(" WHERE ({})").format(sql.SQL(filters[table])) if table in filters else sql.SQL(""))
        for table in tables
    )


def publication_tables(cursor: Any, name: str) -> "Optional[Set[TableName]]":
    """The tables in the publication, or None if there is no such publication."""
    cursor.execute("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s", (name,))
    if cursor.fetchone() is None:
        return None
    cursor.execute(
        "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables WHERE pubname = %s",
        (name,),
    )
    return {TableName(schema, table) for schema, table in cursor.fetchall()}


def drop_publication(cursor: Any, name: str) -> None:
    cursor.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))


@attr.s(frozen=True, slots=True)
class SlotState:
    name: str = attr.ib()
    plugin: Optional[str] = attr.ib()
    database: Optional[str] = attr.ib()
    temporary: bool = attr.ib()
    active_pid: Optional[int] = attr.ib()
    #: 'lost' once max_slot_wal_keep_size made the server remove WAL the slot needed
    #: (None before PostgreSQL 13, which has no such limit).
    wal_status: Optional[str] = attr.ib()

    @property
    def invalidated(self) -> bool:
        return self.wal_status == "lost"


def slot_state(cursor: Any, slot: str) -> Optional[SlotState]:
    # to_jsonb reads wal_status where the server has the column, and NULL where not.
    cursor.execute(
        "SELECT slot_name::text, plugin::text, database::text, temporary, active_pid,"
        " pg_catalog.to_jsonb(s) ->> 'wal_status'"
        " FROM pg_catalog.pg_replication_slots s WHERE slot_name = %s",
        (slot,),
    )
    row = cursor.fetchone()
    return None if row is None else SlotState(*row)


#: First key of the advisory lock a client holds on its slot name, from the start of
#: start() until it closes (the second key is the name's hash). Any int4: "flsh".
SLOT_LOCK = 0x666C7368


def wait_for_slot_lock(cursor: Any, slot: str, timeout: float) -> bool:
    """Take the slot's advisory lock for this session; False if another session still
    held it after ``timeout`` seconds.

    Without it, two clients starting at once would both find no slot, and the one that
    lost the race would drop the winner's publication while cleaning up. The lock goes
    with the session, so a killed client's lock is released as soon as the server
    notices, as its slot is; hence the wait, as in :func:`wait_for_slot`. A client
    whose query connection had to be reopened (after a server restart) takes it again.

    The server does the waiting (``lock_timeout``, set for this transaction only), so a
    lock released meanwhile is taken at once; a session-level advisory lock outlives the
    transaction it was taken in.
    """
    cursor.execute("BEGIN")
    try:
        # At least 1 ms: a lock_timeout of 0 would wait for ever.
        cursor.execute(
            "SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{max(int(timeout * 1000), 1)}ms",)
        )
        cursor.execute("SELECT pg_catalog.pg_advisory_lock(%s, pg_catalog.hashtext(%s))", (SLOT_LOCK, slot))
    except psycopg2.errors.LockNotAvailable:
        cursor.execute("ROLLBACK")
        return False
    except BaseException:
        if not cursor.connection.closed:
            cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")
    return True


def session(cursor: Any) -> Tuple[int, Any]:
    """This session's backend pid and start time: a pid alone may come back later for
    another session."""
    cursor.execute("SELECT pid, backend_start FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()")
    return tuple(cursor.fetchone())


def slot_lock_holder(cursor: Any, slot: str) -> Optional[Tuple[int, Any]]:
    """The session (as :func:`session` gives it) holding the slot's advisory lock, if one does."""
    cursor.execute(
        "SELECT l.pid, a.backend_start FROM pg_catalog.pg_locks l"
        " LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        " AND l.classid = %s::int4::oid AND l.objid = pg_catalog.hashtext(%s)::oid",
        (SLOT_LOCK, slot),
    )
    row = cursor.fetchone()
    return None if row is None else tuple(row)


def wait_for_slot(cursor: Any, slot: str, timeout: float, *, gone: bool) -> Optional[SlotState]:
    """Wait until the slot is inactive (or, with ``gone``, no longer exists).

    A client killed without closing leaves its walsender running until the server
    notices the broken connection, usually within milliseconds; until then its slot is
    active. Returns the slot's last state.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        state = slot_state(cursor, slot)
        if state is None or (state.active_pid is None and not gone):
            return state
        if time.monotonic() >= deadline:
            return state
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def invalidated_slot_error(slot: str, detail: str) -> SlotInvalidatedError:
    return SlotInvalidatedError(
        f"replication slot {slot!r} was invalidated by the server ({detail}): it fell further "
        "behind than max_slot_wal_keep_size allows, and the changes it kept are gone. Drop it "
        "(Driver.drop or 'flash-wal cleanup') and start again; raise max_slot_wal_keep_size, "
        "or keep clients running, so that it does not happen again"
    )


def drop_slot(cursor: Any, slot: str) -> None:
    cursor.execute(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots"
        " WHERE slot_name = %s AND active_pid IS NULL",
        (slot,),
    )


@attr.s(frozen=True, slots=True)
class PublicationState:
    """What a publication is on the server now: its identity and its tables' OIDs."""

    oid: int = attr.ib()
    relids: "frozenset[int]" = attr.ib()


def publication_state(cursor: Any, name: str) -> Optional[PublicationState]:
    """The publication's OID and tables, or None if there is no such publication.

    A publication dropped and made again gets a new OID, and a table removed and added
    again a new ``pg_publication_rel`` row: comparing states tells whether the
    publication held the same tables all along between two looks.
    """
    cursor.execute(
        "SELECT p.oid::int8, ARRAY(SELECT r.prrelid::int8 FROM pg_catalog.pg_publication_rel r"
        " WHERE r.prpubid = p.oid) FROM pg_catalog.pg_publication p WHERE p.pubname = %s",
        (name,),
    )
    row = cursor.fetchone()
    return None if row is None else PublicationState(row[0], frozenset(row[1]))


def table_names(cursor: Any, oids: Iterable[int]) -> Dict[int, TableName]:
    """The current names of the tables with these OIDs; a dropped one is left out."""
    cursor.execute(
        "SELECT c.oid::int8, n.nspname::text, c.relname::text FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s::oid[])",
        (list(oids),),
    )
    return {oid: TableName(schema, name) for oid, schema, name in cursor.fetchall()}
