"""Values as their columns' types: texts read by the server, and conditions typed.

A condition's value must compare with the values events carry for its column, or
every event would either raise or silently fail to match. So at ``start()`` and
``attach`` the driver looks the columns up and:

- reads every ``str`` value with the column's type, on the server (``"10"`` is 10 for
  an int column, ``"2026-01-01"`` a tz-aware datetime for a timestamptz column), then
  decodes it as rows are decoded; the text of a json column is JSON; a str for a
  text or varchar column is kept as given;
- checks that every other value is of a Python type that compares with the column's
  values the way PostgreSQL compares them, and that ordering operators (lt, lte, gt,
  gte) are used only on types whose order flash_wal reproduces.

What fails is a ConfigurationError naming the listener, the column, its type and the
value, raised before anything is changed on the server.
"""

import datetime
import json
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import psycopg2
from psycopg2 import sql

from ...conditions import ORDERING_OPERATORS, SET_OPERATORS, Condition, is_number
from ...decoding import TypeCasters, lookup_types_with
from ...errors import ConfigurationError, one_line
from ...listener import Listener
from .catalog import TableInfo, table_identifier

__all__ = ["ColumnType", "column_types", "column_values", "read_values", "type_conditions"]


class ColumnType(NamedTuple):
    """A column's type, as far as comparing values with it goes."""

    #: The column's type as SQL shows it: ``numeric(10,2)``, ``my_domain``.
    shown: str
    #: The column's type (a domain's oid for a domain column): what rows decode with.
    oid: int
    #: The ``pg_catalog`` name of the type under any domains (``int4``), or None for
    #: a type of another schema (enums and other user-defined types).
    base: Optional[str]
    is_json: bool


def _aware(value: Any) -> bool:
    return value.utcoffset() is not None


def _naive_datetime(value: Any) -> bool:
    return isinstance(value, datetime.datetime) and not _aware(value)


def _aware_datetime(value: Any) -> bool:
    return isinstance(value, datetime.datetime) and _aware(value)


def _time(aware: bool) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, datetime.time) and (value.utcoffset() is not None) == aware


def _of(*types: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, types) and not isinstance(value, bool)


#: Base types whose decoded values Python orders as PostgreSQL does (text as "C"
#: does; numbers with NaN handled by Condition): what values fit them, said how.
_ORDERED: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    **{name: (is_number, "a number (int, float or Decimal)")
       for name in ("int2", "int4", "int8", "oid", "numeric", "float4", "float8")},
    **{name: (_of(str), "a str") for name in ("text", "varchar", "bpchar", "name", "char")},
    "bool": (lambda value: isinstance(value, bool), "a bool"),
    "date": (lambda value: isinstance(value, datetime.date) and not isinstance(value, datetime.datetime),
             "a datetime.date"),
    "timestamp": (_naive_datetime, "a naive datetime.datetime"),
    "timestamptz": (_aware_datetime, "a datetime.datetime with a tzinfo"),
    "time": (_time(aware=False), "a naive datetime.time"),
    "timetz": (_time(aware=True), "a datetime.time with a tzinfo"),
    "interval": (_of(datetime.timedelta), "a datetime.timedelta"),
    "uuid": (_of(uuid.UUID), "a uuid.UUID"),
    "bytea": (_of(bytes), "bytes"),
}
_JSON_VALUE = (dict, list, str, int, float, bool)
#: Text types whose values events carry as the server stores them: a str compares as
#: given, as a SQL literal would (``'abcd'`` against a ``varchar(3)`` is no error in
#: SQL). ``char(n)`` is read by the server, which pads it as events carry it.
_TEXT_AS_GIVEN = frozenset({"text", "varchar", "name"})


def column_types(cursor: Any, info: TableInfo, columns: Iterable[str]) -> Dict[str, ColumnType]:
    """The types of these columns of the table (absent ones are left out)."""
    cursor.execute(
        "WITH RECURSIVE under(attname, shown, atttypid, typid, depth) AS ("
        "  SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid::int8,"
        "         a.atttypid, 0"
        "  FROM pg_catalog.pg_attribute a"
        "  WHERE a.attrelid = %s AND a.attname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        "  UNION ALL"
        "  SELECT u.attname, u.shown, u.atttypid, t.typbasetype, u.depth + 1"
        "  FROM under u JOIN pg_catalog.pg_type t ON t.oid = u.typid WHERE t.typtype = 'd')"
        " SELECT DISTINCT ON (u.attname) u.attname, u.shown, u.atttypid,"
        "  CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN t.typname::text END"
        " FROM under u JOIN pg_catalog.pg_type t ON t.oid = u.typid"
        " ORDER BY u.attname, u.depth DESC",
        (info.oid, sorted(set(columns))),
    )
    return {
        name: ColumnType(shown, oid, base, base in ("json", "jsonb"))
        for name, shown, oid, base in cursor.fetchall()
    }


def read_values(cursor: Any, info: TableInfo, types: Mapping[str, ColumnType],
                texts: Sequence[Tuple[str, str]]) -> List[Any]:
    """Each ``(column, text)`` read as a value of its column, the way events carry it.

    The server reads the text with the column's type and typmod (``char(5)`` pads,
    ``numeric(10,2)`` rounds, a domain checks its constraints) and writes it with the
    type's output function, as the replication stream does; it is then decoded as rows
    are, so it compares equal to that column's values in events. Raises
    psycopg2.DataError for a text the type does not accept, ValueError for a json
    column's text that is not JSON.
    """
    if not texts:
        return []
    records = [{column: json.loads(text) if types[column].is_json else text} for column, text in texts]
    names = sorted({column for column, _text in texts})
    # json_populate_recordset reads each value with its column's exact type and typmod;
    # format() writes it with the type's output function (a cast to text would strip
    # the padding of char(n)).
    query = sql.SQL(
        "SELECT {} FROM pg_catalog.json_populate_recordset(NULL::{}, %s) WITH ORDINALITY AS r ORDER BY r.ordinality"
    ).format(
        sql.SQL(", ").join(
            sql.SQL("CASE WHEN r.{0} IS NOT NULL THEN pg_catalog.format('%%s', r.{0}) END").format(sql.Identifier(name))
            for name in names
        ),
        table_identifier(info.name),
    )
    cursor.execute(query, (json.dumps(records),))
    casters = TypeCasters(cursor, lookup_types_with(cursor))
    rows = cursor.fetchall()
    position = {name: index for index, name in enumerate(names)}
    return [
        casters.caster(types[column].oid)(row[position[column]], cursor)
        for (column, _text), row in zip(texts, rows)
    ]


def column_values(cursor: Any, info: TableInfo, texts: Mapping[str, str]) -> Dict[str, Any]:
    """Each text read as a value of its column (see :func:`read_values`); raises
    ConfigurationError for a missing column or a text its type does not accept."""
    types = column_types(cursor, info, texts)
    unknown = [name for name in texts if name not in types]
    if unknown:
        raise ConfigurationError(
            f"table {info.name} has no column {', '.join(repr(u) for u in unknown)} "
            f"(it has {', '.join(info.columns)}); column names are case-sensitive"
        )
    for name, text in texts.items():
        if types[name].is_json:
            try:
                json.loads(text)
            except ValueError as exc:
                raise ConfigurationError(
                    f"column {name} of {info.name} holds JSON, and {text!r} is not JSON ({exc})"
                ) from None
    try:
        values = read_values(cursor, info, types, list(texts.items()))
    except psycopg2.DataError as exc:
        raise ConfigurationError(
            f"a value given for a column of {info.name} does not fit the column's type: {one_line(exc)}"
        ) from None
    return dict(zip(texts, values))


def type_conditions(cursor: Any, info: TableInfo, listeners: Sequence[Listener]) -> Dict[Listener, Tuple[Condition, ...]]:
    """The conditions of these listeners of one table with their values typed as
    their columns; raises ConfigurationError for one that cannot be (see the module).
    One query for the column types and one for the texts, whatever the listener count."""
    wanted = [listener for listener in listeners if listener.config.conditions]
    if not wanted:
        return {}
    types = column_types(cursor, info, (c.column for l in wanted for c in l.config.conditions))
    texts = sorted({
        (c.column, value) for l in wanted for c in l.config.conditions
        for value in _values_of(c)
        if isinstance(value, str) and c.column in types and types[c.column].base not in _TEXT_AS_GIVEN
    })
    read = dict(zip(texts, _read_or_blame(cursor, info, types, texts, wanted)))
    typed = {}
    for listener in wanted:
        conditions = []
        for condition in listener.config.conditions:
            column = types.get(condition.column)
            if column is None:
                raise ConfigurationError(
                    f"{listener!r}: table {info.name} has no column {condition.column!r} "
                    f"(it has {', '.join(info.columns)}); fix the condition {condition!r}"
                )
            values = [read.get((condition.column, v), v) if isinstance(v, str) else v for v in _values_of(condition)]
            for value in values:
                _check_comparable(listener, condition, column, value)
            if condition.op in SET_OPERATORS:
                conditions.append(condition.with_value(values))
            elif values != [condition.value]:
                conditions.append(condition.with_value(values[0]))
            else:
                conditions.append(condition)
        typed[listener] = tuple(conditions)
    return typed


def _values_of(condition: Condition) -> Sequence[Any]:
    return condition.value if condition.op in SET_OPERATORS else [condition.value]


def _read_or_blame(cursor: Any, info: TableInfo, types: Mapping[str, ColumnType],
                   texts: Sequence[Tuple[str, str]], listeners: Sequence[Listener]) -> List[Any]:
    """:func:`read_values`, and on failure the one text to blame, with its listener."""
    try:
        return read_values(cursor, info, types, texts)
    except (psycopg2.DataError, ValueError):
        pass
    for column, text in texts:
        try:
            read_values(cursor, info, types, [(column, text)])
        except (psycopg2.DataError, ValueError) as exc:
            listener, condition = next(
                (l, c) for l in listeners for c in l.config.conditions
                if c.column == column and text in _values_of(c)
            )
            raise ConfigurationError(
                f"{listener!r}: the condition {condition!r} on column {column} of {info.name}, of type "
                f"{types[column].shown}: the server cannot read {text!r} as {types[column].shown} ({one_line(exc)})"
            ) from None
    raise AssertionError("the texts were read one by one but not together")  # pragma: no cover


def _check_comparable(listener: Listener, condition: Condition, column: ColumnType, value: Any) -> None:
    if value is None:
        return
    where = f"{listener!r}: the condition {condition!r} on column {condition.column} (type {column.shown})"
    ordered = None if column.base is None else _ORDERED.get(column.base)
    if condition.op in ORDERING_OPERATORS and ordered is None:
        raise ConfigurationError(
            f"{where}: flash_wal cannot order values of type {column.shown} as PostgreSQL does; "
            "lt, lte, gt and gte work on numbers, text, booleans, dates and times, intervals, uuid and bytea "
            f"(compare with eq, neq, in or not_in); the value was {value!r}"
        )
    if ordered is not None:
        fits, expected = ordered
    elif column.is_json:
        fits, expected = (lambda v: isinstance(v, _JSON_VALUE)), "a JSON value (dict, list, str, number or bool)"
    else:
        return  # read from a str by the server, or any value: == never raises
    if not fits(value):
        raise ConfigurationError(
            f"{where} cannot compare with {value!r} ({type(value).__name__}): give {expected}, "
            f"or a str the server reads as {column.shown}"
        )
