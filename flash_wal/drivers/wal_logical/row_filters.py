"""Listeners' conditions as publication row filters (``DriverConfig(server_filters=True)``,
PostgreSQL 15 and later), so that rows no listener wants are not sent.

A filter is per operation, as the server keeps it: each operation's publication holds a
table with the OR of the conditions of the listeners that need that operation (each
listener's conditions ANDed), since pgoutput evaluates, for an operation, the filters of
that operation's publications only. Nothing is pushed for an operation of a table when
one of those listeners has no condition, or a condition the server cannot express or
would compare differently from the client (the reason goes to a DEBUG line):

- types other than the few below, whose comparisons agree with the client's: enums and
  other user-defined types and domains, json (no equality; jsonb's is not Python's),
  arrays, floats (Python's NaN is equal to nothing), ``char(n)`` (the server ignores its
  padding);
- text ordering (``lt``...) under a collation other than "C" or "POSIX", and any
  comparison under a nondeterministic collation: the client compares code points;
- for UPDATE and DELETE, columns outside the replica identity: the server would refuse
  the application's own UPDATE and DELETE (FULL covers every column; a partitioned
  table only when it and every partition are FULL).

An UPDATE whose old row passes a filter and new row does not is sent as a DELETE, and
the reverse as an INSERT: what a listener gets from it is the same as from the client's
own transitions, since every listener's conditions imply its operation's filter. The
client still applies every listener's conditions, so events are the same with or
without filters. Values are written as literals cast to the column's type, in the text
the server itself gives them, so each is a constant in the filter.
"""

import logging
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set

import psycopg2
from psycopg2 import sql

from ...listener import Listener
from ...operations import Operation
from ...table_name import TableName
from .catalog import TableInfo
from .publications import needed_operations

__all__ = ["FILTERED_OPERATIONS", "filters_by_publication", "row_filtered_tables", "row_filters"]

logger = logging.getLogger(__name__)

#: The operations a row filter applies to (TRUNCATE has no rows).
FILTERED_OPERATIONS = (Operation.INSERT, Operation.UPDATE, Operation.DELETE)

#: Built-in types whose comparisons on the server agree with the client's: bool, int8,
#: int2, int4, text, date, time, timestamp, timestamptz, numeric, varchar, uuid.
_COMPARABLE_TYPES = frozenset({16, 20, 21, 23, 25, 1082, 1083, 1114, 1184, 1700, 1043, 2950})

_OPERATORS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_ORDERING = frozenset({"lt", "lte", "gt", "gte"})


class _Column(NamedTuple):
    """What decides whether a condition on the column can be pushed."""

    type_oid: int
    type_sql: str
    #: None for a type without collation; else whether it orders as the client does.
    code_point_order: Optional[bool]
    deterministic: bool
    in_identity: bool


class _NotPushed(Exception):
    """Why a condition cannot become part of a filter."""


def row_filters(
    cursor: Any, infos: Mapping[TableName, TableInfo], listeners: Sequence[Listener],
) -> Dict[Operation, Dict[TableName, str]]:
    """Each filtered operation's row filter of each table that gets one, as SQL text."""
    by_table: Dict[TableName, List[Listener]] = {}
    for listener in listeners:
        by_table.setdefault(listener.table, []).append(listener)
    filters: Dict[Operation, Dict[TableName, str]] = {operation: {} for operation in FILTERED_OPERATIONS}
    for table, table_listeners in by_table.items():
        columns = _columns(cursor, infos[table])
        for operation in FILTERED_OPERATIONS:
            wanting = [l for l in table_listeners if needed_operations([l]).get(table, Operation(0)) & operation]
            if not wanting:
                continue
            try:
                expression = sql.SQL(" OR ").join(
                    sql.SQL("({})").format(_listener_filter(cursor, l, columns, operation)) for l in wanting
                )
            except _NotPushed as reason:
                logger.debug("no row filter for %s of %s: %s", str(operation).lower(), table, reason)
                continue
            filters[operation][table] = expression.as_string(cursor)
    return filters


def _listener_filter(cursor: Any, listener: Listener, columns: Mapping[str, _Column], operation: Operation) -> sql.Composable:
    conditions = listener.conditions  # as the driver typed them
    if not conditions:
        raise _NotPushed(f"{listener!r} has no condition")
    return sql.SQL(" AND ").join(_condition(cursor, condition, columns, operation) for condition in conditions)


def _condition(cursor: Any, condition: Any, columns: Mapping[str, _Column], operation: Operation) -> sql.Composable:
    op: str = getattr(condition, "op", "eq")
    column = columns[condition.column]
    name = repr(condition.column)
    if column.type_oid not in _COMPARABLE_TYPES:
        raise _NotPushed(f"column {name} is of type {column.type_sql}, which the server compares differently")
    if not column.deterministic:
        raise _NotPushed(f"column {name} has a nondeterministic collation")
    if op in _ORDERING and column.code_point_order is False:
        raise _NotPushed(f"column {name} orders text by a collation other than \"C\"")
    if operation != Operation.INSERT and not column.in_identity:
        raise _NotPushed(f"column {name} is not in the replica identity, which {str(operation).lower()} filters need")
    target, value = sql.Identifier(condition.column), condition.value
    if op in ("in", "not_in"):
        # In a stable order, so that the same conditions give the same filter text.
        present = [_literal(cursor, v, column) for v in sorted((v for v in value if v is not None), key=repr)]
        listed = sql.SQL("{} {} ({})").format(target, sql.SQL("IN" if op == "in" else "NOT IN"), sql.SQL(", ").join(present))
        if op == "in":
            if None in value:
                return sql.SQL("({} IS NULL{})").format(target, sql.SQL(" OR {}").format(listed) if present else sql.SQL(""))
            return listed
        # A NULL column fails not_in, whatever the values.
        return sql.SQL("({} IS NOT NULL{})").format(target, sql.SQL(" AND {}").format(listed) if present else sql.SQL(""))
    if op not in _OPERATORS:
        raise _NotPushed(f"operator {op!r} is unknown here")
    if value is None:  # eq None is IS NULL, neq None IS NOT NULL; the others refuse None
        return sql.SQL("{} IS {}NULL").format(target, sql.SQL("NOT " if op == "neq" else ""))
    return sql.SQL("{} {} {}").format(target, sql.SQL(_OPERATORS[op]), _literal(cursor, value, column))


def _literal(cursor: Any, value: Any, column: _Column) -> sql.Composable:
    """``CAST('<text>' AS <type>)``: a constant, with the text the server gives the value
    read as the column's type (a cast at filter time may not be immutable)."""
    try:
        cursor.execute(sql.SQL("SELECT CAST(CAST(%s AS {}) AS text)").format(sql.SQL(column.type_sql)), (value,))
    except psycopg2.Error as exc:
        raise _NotPushed(f"the server cannot read {value!r} as {column.type_sql} ({str(exc).strip()})") from None
    text: str = cursor.fetchone()[0]
    return sql.SQL("CAST({} AS {})").format(sql.Literal(text), sql.SQL(column.type_sql))


def _columns(cursor: Any, info: TableInfo) -> Dict[str, _Column]:
    cursor.execute(
        "SELECT a.attname::text, a.atttypid::int8, pg_catalog.format_type(a.atttypid, NULL),"
        " CASE WHEN a.attcollation = 0 THEN NULL ELSE coll.collname IN ('C', 'POSIX') END,"
        " coalesce((pg_catalog.to_jsonb(coll) ->> 'collisdeterministic')::bool, true),"
        " CASE WHEN c.relreplident = 'f' THEN c.relkind <> 'p' OR NOT EXISTS ("
        "        SELECT 1 FROM pg_catalog.pg_partition_tree(c.oid) p JOIN pg_catalog.pg_class pc ON pc.oid = p.relid"
        "        WHERE pc.relreplident <> 'f')"
        "      WHEN c.relkind = 'p' THEN false"
        "      ELSE EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid"
        "        AND (i.indisreplident OR (c.relreplident = 'd' AND i.indisprimary))"
        "        AND a.attnum = ANY(i.indkey::int2[])) END"
        " FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
        " LEFT JOIN pg_catalog.pg_collation coll ON coll.oid = a.attcollation"
        " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (info.oid,),
    )
    return {name: _Column(*rest) for name, *rest in cursor.fetchall()}


def filters_by_publication(
    publications: Mapping[str, Operation], filters: Mapping[Operation, Mapping[TableName, str]]
) -> Dict[str, Dict[TableName, str]]:
    """The row filter of each table in each publication. A publication of several
    operations (a resumed slot's of an earlier version) gets none: one filter would
    serve them all."""
    return {
        name: dict(filters.get(operations, {})) if len(operations.atoms()) == 1 else {}
        for name, operations in publications.items()
    }


def row_filtered_tables(cursor: Any, name: str, server_version: int) -> Set[TableName]:
    """The tables of the publication that have a row filter (PostgreSQL 15+)."""
    if server_version < 150000:
        return set()
    cursor.execute(
        "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables"
        " WHERE pubname = %s AND rowfilter IS NOT NULL",
        (name,),
    )
    return {TableName(schema, table) for schema, table in cursor.fetchall()}


