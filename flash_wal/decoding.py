"""From pgoutput tuples to Python rows: the relation cache and the type casters.

Text values are turned into Python objects by psycopg2's own typecasters, so a value
decodes exactly as it would from a ``SELECT``. Each relation gets one
:class:`RowDecoder`, built once from its Relation message: a tuple of column names and
a tuple of casters indexed by column, and a decoding function written for them.

The server formats the text (dates, intervals, floats); the replication connection
pins those formats (see ``SESSION_SETTINGS``) so the casters always understand it.
A value a caster cannot represent all the same (a BC date, a year past 9999, bytes
invalid in UTF-8 from a SQL_ASCII database) is delivered as its text: one bad value
must not stop the stream for every listener.
"""

import datetime
import decimal
import logging
import uuid
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Set, Tuple

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from .errors import ProtocolError
from .table_name import TableName
from .pgoutput import BinaryValue, Relation
from .sentinels import UNCHANGED_TOAST

__all__ = ["SESSION_SETTINGS", "TypeCasters", "RowDecoder", "RelationCache", "TypeInfo"]

logger = logging.getLogger(__name__)

#: Output formats pinned on every connection whose text flash_wal decodes.
SESSION_SETTINGS: Mapping[str, str] = {
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "client_encoding": "UTF8",
    "bytea_output": "hex",
    "TimeZone": "UTC",
}

Caster = Any  # a psycopg2 typecaster, or any callable(text_or_bytes, cursor)
Row = Dict[str, Any]
TypeLookup = Callable[[Sequence[int]], Iterable["TypeInfo"]]
#: Relation OID -> the columns of its primary key, else of its replica identity index,
#: in key order (empty: neither); see :data:`KEY_COLUMNS_QUERY`.
KeyLookup = Callable[[int], Sequence[str]]

_BYTEA_OID, _BYTEA_ARRAY_OID = 17, 1001
_TYPECASTER = type(psycopg2.STRING)
_UUID_OID, _UUID_ARRAY_OID = 2950, 2951

#: Values of these classes cannot be changed in place: an old row may share them with
#: the new row (a callback that mutates a list or dict of one row must not change the other).
_IMMUTABLE = frozenset({
    str, int, float, bool, bytes, type(None), decimal.Decimal, datetime.datetime, datetime.date, datetime.time,
    datetime.timedelta, uuid.UUID,
})


class TypeInfo:
    """The ``pg_type`` facts needed to build a caster for a type psycopg2 does not know."""

    __slots__ = ("oid", "name", "kind", "base_oid", "element_oid")

    def __init__(self, oid: int, name: str, kind: str, base_oid: int, element_oid: int) -> None:
        self.oid = oid
        self.name = name
        self.kind = kind  # pg_type.typtype: b base, d domain, e enum, c composite, r range...
        self.base_oid = base_oid
        self.element_oid = element_oid


#: Looks up the types a TypeCasters does not know; run on a normal (non-replication)
#: connection. Array types are recognised by pg_type.typelem with typlen = -1.
TYPE_INFO_QUERY = (
    "SELECT oid::int8, typname, typtype, typbasetype::int8,"
    " CASE WHEN typlen = -1 THEN typelem::int8 ELSE 0 END"
    " FROM pg_catalog.pg_type WHERE oid = ANY(%s::oid[])"
)


def lookup_types_with(cursor: Any) -> TypeLookup:
    """A :data:`TypeLookup` that queries ``pg_type`` through ``cursor``."""

    def lookup(oids: Sequence[int]) -> Iterable[TypeInfo]:
        cursor.execute(TYPE_INFO_QUERY, (list(oids),))
        return [TypeInfo(*row) for row in cursor.fetchall()]

    return lookup


#: The columns that identify a row of a table by default (``%(relid)s``), in key order:
#: its primary key's, else its replica identity index's. INCLUDE columns are not part
#: of the key; pg_index.indnkeyatts, which counts the others, came with PostgreSQL 11,
#: hence the JSON detour that reads it where it exists.
KEY_COLUMNS_QUERY = (
    "SELECT ARRAY(SELECT a.attname::text"
    "  FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)"
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
    "  WHERE k.position <= COALESCE((pg_catalog.to_jsonb(i) ->> 'indnkeyatts')::int, i.indnatts)"
    "  ORDER BY k.position)"
    " FROM pg_catalog.pg_index i WHERE i.indrelid = %(relid)s AND (i.indisprimary OR i.indisreplident)"
    " ORDER BY i.indisprimary DESC LIMIT 1"
)


def lookup_keys_with(cursor: Any) -> KeyLookup:
    """A :data:`KeyLookup` that queries ``pg_index`` through ``cursor``."""

    def lookup(relid: int) -> Sequence[str]:
        cursor.execute(KEY_COLUMNS_QUERY, {"relid": relid})
        row = cursor.fetchone()
        return () if row is None else tuple(row[0])

    return lookup


def _bytea(value: Any, cursor: Any) -> Optional[bytes]:
    view = psycopg2.BINARY(value, cursor)
    return None if view is None else bytes(view)


def _memoryviews_to_bytes(value: Any) -> Any:
    if isinstance(value, list):
        return [_memoryviews_to_bytes(item) for item in value]
    return None if value is None else bytes(value)


def _bytea_array(value: Any, cursor: Any) -> Any:
    # psycopg2 gives memoryviews; the API promises bytes.
    return _memoryviews_to_bytes(psycopg2.extensions.BINARYARRAY(value, cursor))


class TypeCasters:
    """Casters by type OID: psycopg2's built-in ones, uuid, and what ``pg_type`` tells.

    Enums decode as str, domains as their base type, arrays of either as lists; a
    type that cannot be resolved decodes as str. Each OID is looked up once.
    """

    def __init__(self, cursor: Any, lookup: Optional[TypeLookup] = None) -> None:
        self.cursor = cursor
        self._lookup = lookup
        self._casters: Dict[int, Caster] = dict(psycopg2.extensions.string_types)
        # register_uuid on our own cursor creates the casters without touching
        # the process-wide registry the application may rely on.
        psycopg2.extras.register_uuid(conn_or_curs=cursor)  # type: ignore[no-untyped-call]
        # register_uuid creates these (types-psycopg2 does not know them).
        self._casters[_UUID_OID] = psycopg2.extensions.UUID  # type: ignore[attr-defined]
        self._casters[_UUID_ARRAY_OID] = psycopg2.extensions.UUIDARRAY  # type: ignore[attr-defined]
        self._casters[_BYTEA_OID] = _bytea
        self._casters[_BYTEA_ARRAY_OID] = _bytea_array
        self._resolved: Set[int] = set(self._casters)
        #: ``(table, column)`` pairs already warned about holding a value that does not
        #: decode: shared by every decoder, so a new Relation message does not warn again.
        self.undecodable_columns: Set[Tuple[str, str]] = set()

    def caster(self, oid: int) -> Caster:
        if oid not in self._resolved:
            self.resolve([oid])
        return self._casters.get(oid, psycopg2.STRING)

    def resolve(self, oids: Iterable[int]) -> None:
        """Look up, in one query per level of nesting, the OIDs not known yet."""
        pending = {oid for oid in oids if oid not in self._resolved}
        infos: Dict[int, TypeInfo] = {}
        while pending and self._lookup is not None:
            try:
                found = {info.oid: info for info in self._lookup(sorted(pending))}
            except psycopg2.Error as exc:
                logger.warning("could not look up types %s, decoding them as text: %s", sorted(pending), exc)
                break
            infos.update(found)
            self._resolved.update(pending)
            pending = {
                dependency
                for info in found.values()
                for dependency in (info.base_oid, info.element_oid)
                if dependency and dependency not in self._resolved and dependency not in infos
            }
        for oid in sorted(infos):
            self._build(oid, infos)
        self._resolved.update(infos)

    def _build(self, oid: int, infos: Dict[int, TypeInfo]) -> Caster:
        if oid in self._casters:
            return self._casters[oid]
        info = infos.get(oid)
        caster: Caster = psycopg2.STRING
        if info is not None:
            if info.kind == "d":
                caster = self._build(info.base_oid, infos)
            elif info.element_oid:
                element = self._build(info.element_oid, infos)
                if isinstance(element, _TYPECASTER):
                    caster = psycopg2.extensions.new_array_type((oid,), info.name.upper(), element)
        self._casters[oid] = caster
        return caster


class RowDecoder:
    """Decodes the tuples of one relation into ``{column: value}`` dicts.

    ``decode`` is the hot path: a function written for this relation's columns when
    the decoder is made (see :func:`_unrolled_decode`). ``decode_plain`` is its twin,
    the obvious loop, which ``decode`` hands every row it cannot take; the two give the
    same row for any tuple (tests/unit/test_hot_path.py).
    """

    __slots__ = (
        "relation", "table", "table_text", "names", "casters", "key_names", "primary_key", "cursor", "decode",
        "decode_update", "_undecodable",
    )

    def __init__(self, relation: Relation, casters: TypeCasters, primary_key: Sequence[str] = ()) -> None:
        self.relation = relation
        namespace = relation.namespace or "pg_catalog"
        self.table = TableName(namespace, relation.name)
        self.table_text = str(self.table)  # what events carry
        self.names: Tuple[str, ...] = tuple(column.name for column in relation.columns)
        self.casters: Tuple[Caster, ...] = tuple(casters.caster(column.type_oid) for column in relation.columns)
        #: The replica identity's columns, as the Relation message flags them.
        self.key_names: Tuple[str, ...] = tuple(column.name for column in relation.columns if column.is_key)
        #: The columns that identify a row by default, in key order (see :func:`default_key`).
        self.primary_key: Tuple[str, ...] = tuple(primary_key)
        self.cursor = casters.cursor
        self._undecodable = casters.undecodable_columns
        #: Decodes one tuple (a sequence of pgoutput column values) into a row.
        self.decode: Callable[[Sequence[Any]], Row] = _unrolled_decode(self)
        #: Decodes an UPDATE's full old tuple and new tuple into ``(old, new)`` rows.
        self.decode_update: Callable[[Sequence[Any], Sequence[Any]], Tuple[Row, Row]] = _unrolled_decode_update(self)

    def decode_update_plain(self, old: Sequence[Any], new: Sequence[Any]) -> Tuple[Row, Row]:
        """An UPDATE with its full old row (REPLICA IDENTITY FULL), the obvious way:
        each tuple decoded, then unchanged TOASTed values of ``new`` taken from ``old``."""
        old_row, new_row = self.decode(old), self.decode(new)
        fill_unchanged_toast(new_row, old_row)
        return old_row, new_row

    def decode_plain(self, values: Sequence[Any]) -> Row:
        """Decode one tuple the obvious way, column by column."""
        if len(values) != len(self.names):
            raise ProtocolError(
                f"relation {self.table} has {len(self.names)} columns but the tuple has {len(values)}"
            )
        row = {}
        for name, cast, value in zip(self.names, self.casters, values):
            if value.__class__ is bytes:
                try:
                    row[name] = cast(value, self.cursor)
                except Exception as exc:
                    row[name] = self._as_text(name, value, exc)
            elif value.__class__ is BinaryValue:
                row[name] = value.data
            else:  # None or UNCHANGED_TOAST
                row[name] = value
        return row

    def _as_text(self, name: str, value: bytes, exc: Exception) -> str:
        column = (self.table_text, name)
        if column not in self._undecodable:
            self._undecodable.add(column)
            # The exception says what is wrong (a year out of range, a byte that is not
            # UTF-8) without repeating the value, which may be personal data.
            logger.warning(
                "column %s of %s holds a value psycopg2 cannot turn into a Python object (%s: %s): "
                "delivering it as text (str), as every such value of this column from now on, without "
                "warning again",
                name, self.table_text, type(exc).__name__, exc,
            )
        # Invalid UTF-8 (a SQL_ASCII database holds any bytes) shows as backslash escapes.
        return value.decode("utf-8", "backslashreplace")

    def decode_key(self, values: Sequence[Any]) -> Dict[str, Any]:
        """Decode an old tuple sent as key only: non-key columns were sent as NULL."""
        row = self.decode(values)
        return {name: row[name] for name in self.key_names}


def _unrolled_decode(decoder: RowDecoder) -> Callable[[Sequence[Any]], Row]:
    """``decoder.decode_plain`` without its loop, for a row of text and NULLs.

    For columns ``a, b`` it writes and compiles::

        def decode(values):
            try:
                [v0, v1] = values
                return {n0: c0(v0, cursor), n1: c1(v1, cursor)}
            except Exception:
                pass
            return decode_plain(values)

    with ``n0`` the first column's name and ``c0`` its caster. psycopg2's casters take
    text and None (which gives None) as they come; any other row (an UNCHANGED_TOAST or
    a binary value, which no caster takes, a value its caster cannot represent, a tuple
    of the wrong length) raises inside and goes to ``decode_plain``. A quarter faster
    than a loop or a comprehension over the columns (docs/performance.rst), which is
    why attrs and dataclasses write their methods the same way. Only names made here
    (``n0``, ``c0``, ``v0``) enter the source, never one the server sent.
    """
    count = len(decoder.names)
    targets = ", ".join(f"v{i}" for i in range(count))
    items = ", ".join(f"n{i}: c{i}(v{i}, cursor)" for i in range(count))
    source = (
        "def decode(values):\n"
        "    try:\n"
        f"        [{targets}] = values\n"
        f"        return {{{items}}}\n"
        "    except Exception:\n"
        "        pass\n"
        "    return decode_plain(values)\n"
    )
    decode: Callable[[Sequence[Any]], Row] = _compiled(
        decoder, source, "row decoder", decode_plain=decoder.decode_plain)["decode"]
    return decode


def _compiled(decoder: RowDecoder, source: str, what: str, **names: Any) -> Dict[str, Any]:
    """Run ``source`` with the relation's column names as ``n0, n1, ...``, its casters
    as ``c0, c1, ...``, the cursor and ``names``: the namespace it defined."""
    namespace: Dict[str, Any] = {"cursor": decoder.cursor, **names}
    namespace.update((f"n{i}", name) for i, name in enumerate(decoder.names))
    namespace.update((f"c{i}", cast) for i, cast in enumerate(decoder.casters))
    exec(compile(source, f"<{what} of {decoder.table_text}>", "exec"), namespace)
    return namespace


def _unrolled_decode_update(decoder: RowDecoder) -> Callable[[Sequence[Any], Sequence[Any]], Tuple[Row, Row]]:
    """``decoder.decode_update_plain`` written out for the relation's columns.

    Under REPLICA IDENTITY FULL every UPDATE brings the whole old row, and most of its
    columns hold the same text as the new row's: those are decoded once, and the old
    row shares the new row's value when it cannot be changed in place (str, int,
    Decimal, datetime...; a list or dict is decoded again, so each row has its own).
    For columns ``a, b`` it writes::

        def decode_update(old, new):
            try:
                [o0, o1] = old
                [v0, v1] = new
                d0 = c0(v0, cursor)
                d1 = c1(v1, cursor)
                return ({n0: d0 if o0 == v0 and d0.__class__ in immutable else c0(o0, cursor),
                         n1: ...}, {n0: d0, n1: d1})
            except Exception:
                pass
            return decode_update_plain(old, new)

    As for :func:`_unrolled_decode`, anything but text and NULLs (an UNCHANGED_TOAST,
    which no caster takes, so nothing is left to fill in) goes to the plain twin.
    """
    count = len(decoder.names)
    olds = ", ".join(f"o{i}" for i in range(count))
    news = ", ".join(f"v{i}" for i in range(count))
    casts = "".join(f"        d{i} = c{i}(v{i}, cursor)\n" for i in range(count))
    old_items = ", ".join(
        f"n{i}: d{i} if o{i} == v{i} and d{i}.__class__ in immutable else c{i}(o{i}, cursor)" for i in range(count))
    new_items = ", ".join(f"n{i}: d{i}" for i in range(count))
    source = (
        "def decode_update(old, new):\n"
        "    try:\n"
        f"        [{olds}] = old\n"
        f"        [{news}] = new\n"
        f"{casts}"
        f"        return {{{old_items}}}, {{{new_items}}}\n"
        "    except Exception:\n"
        "        pass\n"
        "    return decode_update_plain(old, new)\n"
    )
    decode_update: Callable[[Sequence[Any], Sequence[Any]], Tuple[Row, Row]] = _compiled(
        decoder, source, "update decoder", decode_update_plain=decoder.decode_update_plain,
        immutable=_IMMUTABLE)["decode_update"]
    return decode_update


class RelationCache:
    """Relation OID -> :class:`RowDecoder`, kept current by Relation messages."""

    def __init__(self, casters: TypeCasters, key_lookup: Optional[KeyLookup] = None) -> None:
        self.casters = casters
        self._key_lookup = key_lookup
        self._decoders: Dict[int, RowDecoder] = {}

    def update(self, relation: Relation) -> RowDecoder:
        self.casters.resolve(column.type_oid for column in relation.columns)
        decoder = RowDecoder(relation, self.casters, default_key(relation, self._key_lookup))
        self._decoders[relation.relid] = decoder
        return decoder

    def get(self, relid: int) -> RowDecoder:
        try:
            return self._decoders[relid]
        except KeyError:
            raise ProtocolError(f"change for relation {relid} before its Relation message") from None


def default_key(relation: Relation, lookup: Optional[KeyLookup]) -> Tuple[str, ...]:
    """The columns that identify a row of ``relation`` by default, in key order: its
    primary key's, else its replica identity index's, else none.

    Why both the Relation message and the catalog: pgoutput flags the replica identity's
    columns as the WAL had them, so under REPLICA IDENTITY DEFAULT or USING INDEX the
    flags are the key, and they stay right when a backlog is decoded long after the
    schema changed again. But they come in column order, not key order, and under FULL
    (what flash_wal sets by default) every column is flagged: the key's order, and
    under FULL or NOTHING the key itself, can only come from the catalog, which is
    read when the Relation message arrives. So the catalog's key is taken when it agrees
    with the flags (or when the flags say nothing), the flags' otherwise.
    """
    flagged = tuple(column.name for column in relation.columns if column.is_key)
    names = {column.name for column in relation.columns}
    found: Tuple[str, ...] = ()
    # Twice: a catalog connection the server dropped (a restart, say) is only known to
    # be closed once a query on it failed, and the next look-up opens a new one.
    for attempt in (1, 2):
        if lookup is None:
            break
        try:
            found = tuple(lookup(relation.relid))
            break
        except psycopg2.Error as exc:
            if attempt == 2:
                logger.warning("could not look up the key of %s.%s: %s", relation.namespace, relation.name, exc)
    if relation.replica_identity in ("d", "i"):
        return found if set(found) == set(flagged) else flagged
    return found if set(found) <= names else ()


def fill_unchanged_toast(new: Dict[str, Any], old: Optional[Mapping[str, Any]]) -> None:
    """Replace UNCHANGED_TOAST in ``new`` with the old row's value, when it has one."""
    if old is None:
        return
    for name, value in new.items():
        if value is UNCHANGED_TOAST:
            previous = old.get(name, UNCHANGED_TOAST)
            if previous is not UNCHANGED_TOAST:
                new[name] = previous
