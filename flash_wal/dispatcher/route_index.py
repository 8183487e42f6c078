"""Which routes of a table a change can reach: an index by equality conditions.

A multi-tenant application attaches a listener per tenant (``Condition("tenant_id",
t)``); checking every change against every listener would make each change cost as
much as there are tenants. :class:`TableRoutes` indexes each route by one of its
equality conditions, (column, value), or by an ``in`` condition under each of its
values, so a change reaches the routes whose indexed value its old or new row holds
(an UPDATE can leave a route's rows: the old row matching is enough to be reached),
and the routes without such a condition; each route still checks all its conditions.

The index only ever narrows: a route it leaves out could not have matched. That holds
because a route is indexed only under values that are not None (IS NULL is checked as
before) and of a type whose equality and hash agree (:data:`HASH_SAFE`: ``==``
between them implies equal hashes); a row value of any other type, or one that cannot
be hashed, reaches every route indexed on its column, to be checked. A condition whose
value is not of those types leaves its route unindexed.

A :class:`TableRoutes` is never changed once built: attach and detach build a new one
and replace it whole, so the replication thread reads it without a lock.
"""

import datetime
import decimal
import uuid
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from .routes import Route

__all__ = ["HASH_SAFE", "TableRoutes", "index_values"]

#: Value types that are equal only where their hashes are: Python's numbers hash
#: alike when they are equal (1 == 1.0 == Decimal(1) == True), and so do the others
#: among themselves. Subclasses are not trusted (an IntEnum may redefine ==).
HASH_SAFE: FrozenSet[type] = frozenset({
    bool, int, float, decimal.Decimal, str, bytes,
    datetime.date, datetime.datetime, datetime.time, datetime.timedelta, uuid.UUID,
})


def index_values(condition: Any) -> Optional[Tuple[Any, ...]]:
    """The values a row's column must equal one of for ``condition`` to hold, or None
    when the condition is not one the index can serve (an operator other than ``eq`` or
    ``in``, IS NULL, a value of a type not in :data:`HASH_SAFE`)."""
    op = getattr(condition, "op", "eq")
    values: Tuple[Any, ...]
    if op == "eq":
        values = (condition.value,)
    elif op == "in" and getattr(condition, "values", None) is not None:
        values = tuple(condition.values)
        if not values:
            return None
    else:
        return None
    for value in values:
        if value is None or type(value) not in HASH_SAFE:
            return None
        try:
            hash(value)  # a signalling Decimal NaN cannot be hashed
        except TypeError:
            return None
        if value != value:
            return None  # NaN equals NaN for a Condition, never for a dict's keys
    return values


class TableRoutes:
    """The routes of one table, in attach order, and the index into them."""

    __slots__ = ("routes", "unindexed", "columns", "_position")

    def __init__(self, routes: Tuple[Route, ...]) -> None:
        self.routes = routes
        self._position = {route: number for number, route in enumerate(routes)}
        unindexed: List[Route] = []
        by_column: Dict[str, Dict[Any, List[Route]]] = {}
        on_column: Dict[str, List[Route]] = {}
        for route in routes:
            column, values = self._indexed_by(route.conditions)
            if column is None:
                unindexed.append(route)
                continue
            buckets = by_column.setdefault(column, {})
            for value in values:
                bucket = buckets.setdefault(value, [])
                if route not in bucket:  # Condition("c", "in", [1, 1.0]) is one bucket
                    bucket.append(route)
            on_column.setdefault(column, []).append(route)
        #: Routes checked against every change, in attach order.
        self.unindexed: Tuple[Route, ...] = tuple(unindexed)
        #: (column, value -> routes, every route indexed on the column), each in attach order.
        self.columns: Tuple[Tuple[str, Dict[Any, Tuple[Route, ...]], Tuple[Route, ...]], ...] = tuple(
            (column, {value: tuple(bucket) for value, bucket in buckets.items()}, tuple(on_column[column]))
            for column, buckets in by_column.items()
        )

    @staticmethod
    def _indexed_by(conditions: Iterable[Any]) -> Tuple[Optional[str], Tuple[Any, ...]]:
        for condition in conditions:
            values = index_values(condition)
            if values is not None:
                return condition.column, values
        return None, ()

    def reached_by(self, old: Optional[Dict[str, Any]], new: Optional[Dict[str, Any]]) -> Sequence[Route]:
        """The routes a change with these rows can give an event to, in attach order."""
        columns = self.columns
        if not columns:
            return self.routes
        if len(columns) == 1 and not self.unindexed and (old is None or new is None):
            # The common case, spelled out: one row, one indexed column, nothing else.
            column, buckets, on_column = columns[0]
            value = (new if old is None else old).get(column)  # type: ignore[union-attr]
            if value is None:
                return ()
            if type(value) not in HASH_SAFE:
                return on_column
            try:
                return buckets.get(value, ())
            except TypeError:
                return on_column
        found: List[Route] = list(self.unindexed)
        for column, buckets, on_column in columns:
            for row in (new, old):
                if row is None:
                    continue
                value = row.get(column)
                if value is None:
                    continue
                if type(value) not in HASH_SAFE:
                    found.extend(on_column)
                    continue
                try:
                    found.extend(buckets.get(value, ()))
                except TypeError:
                    found.extend(on_column)
        if len(found) < 2:
            return found
        return sorted(set(found), key=self._position.__getitem__)
