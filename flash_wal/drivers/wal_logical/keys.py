"""The tables' keys as the catalog has them, and the check of a listener's ``primary_key``.

At start() and attach, before anything is changed on the server: a key the listener
configured must be columns of its table, and, unless flash_wal sets REPLICA IDENTITY
FULL, columns whose old values the WAL holds, since a DELETE's key and whether an
UPDATE changed it are read from them. While streaming, the key comes with each
Relation message instead (``flash_wal.decoding.default_key``), so that a schema change
is followed.
"""

from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import attr

from ...errors import ConfigurationError
from ...listener import Listener
from ...table_name import TableName
from .catalog import TableInfo

__all__ = ["TableKeys", "describe_keys", "check_listener_key"]


def _index_columns(which: str) -> str:
    """The columns of table ``c``'s index for which ``which`` holds, in key order. INCLUDE
    columns are left out: pg_index.indnkeyatts, from PostgreSQL 11 on, is read through
    JSON so that PostgreSQL 10 runs the same query."""
    return (
        "SELECT a.attname::text FROM pg_catalog.pg_index i,"
        "  unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)"
        "  JOIN pg_catalog.pg_attribute a ON a.attnum = k.attnum"
        f" WHERE i.indrelid = c.oid AND {which} AND a.attrelid = c.oid"
        "  AND k.position <= COALESCE((pg_catalog.to_jsonb(i) ->> 'indnkeyatts')::int, i.indnatts)"
        " ORDER BY k.position"
    )


@attr.s(frozen=True, slots=True)
class TableKeys:
    #: "d", "i", "f" or "n", as pg_class.relreplident.
    replica_identity: str = attr.ib()
    #: The primary key's columns, in key order; empty without one.
    primary_key: Tuple[str, ...] = attr.ib()
    #: The replica identity index's columns (REPLICA IDENTITY USING INDEX), in key order.
    identity_index: Tuple[str, ...] = attr.ib()

    @property
    def default_key(self) -> Tuple[str, ...]:
        """What identifies a row when the listener names no key (API.md, ``primary_key``)."""
        return self.primary_key or self.identity_index

    @property
    def identity_columns(self) -> Optional[Tuple[str, ...]]:
        """The columns whose old values the WAL holds under the replica identity as it
        is now; None for all of them (FULL)."""
        if self.replica_identity == "f":
            return None
        return {"d": self.primary_key, "i": self.identity_index}.get(self.replica_identity, ())

    def describe_identity(self) -> str:
        if self.replica_identity == "d":
            return f"the primary key: {', '.join(self.primary_key)}" if self.primary_key else "DEFAULT, with no primary key"
        if self.replica_identity == "i":
            return f"USING INDEX, on {', '.join(self.identity_index)}"
        return "FULL" if self.replica_identity == "f" else "NOTHING"


def describe_keys(cursor: Any, infos: Iterable[TableInfo]) -> Dict[TableName, TableKeys]:
    """The keys of tables that :func:`~.catalog.describe_tables` found, in one query."""
    by_oid = {info.oid: info for info in infos}
    if not by_oid:
        return {}
    cursor.execute(
        "SELECT c.oid::int8, c.relreplident,"
        f" ARRAY({_index_columns('i.indisprimary')}), ARRAY({_index_columns('i.indisreplident')})"
        " FROM pg_catalog.pg_class c WHERE c.oid = ANY(%s::oid[])",
        (list(by_oid),),
    )
    return {
        by_oid[oid].name: TableKeys(identity, tuple(primary_key), tuple(identity_index))
        for oid, identity, primary_key, identity_index in cursor.fetchall()
    }


def check_listener_key(listener: Listener, info: TableInfo, keys: TableKeys, replica_identity_full: bool) -> None:
    """Raise ConfigurationError, naming listener, table and columns, for a configured
    key the table lacks or (``replica_identity_full=False``) its identity does not cover."""
    key: Sequence[str] = listener.config.primary_key
    if not key:
        return
    unknown = [column for column in key if column not in info.columns]
    if unknown:
        raise ConfigurationError(
            f"listener {listener!r}: primary_key names {', '.join(map(repr, unknown))}, which table "
            f"{info.name} does not have (it has {', '.join(info.columns)}); fix the listener's primary_key"
        )
    covered = keys.identity_columns
    if replica_identity_full or covered is None:
        return
    missing = [column for column in key if column not in covered]
    if missing:
        raise ConfigurationError(
            f"listener {listener!r}: primary_key column {', '.join(map(repr, missing))} of table {info.name} "
            f"is not in its replica identity ({keys.describe_identity()}), so the WAL does not hold its old "
            "values; use DriverConfig(replica_identity_full=True), give the table a replica identity that "
            "covers the key (ALTER TABLE ... REPLICA IDENTITY USING INDEX ..., or FULL), or another primary_key"
        )
