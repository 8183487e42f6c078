"""Conditions: which rows a listener wants, as ``Condition(column, value, op)``.

A condition is checked for every change of its table, on the replication thread, so
the work is done when it is made: :attr:`Condition.holds` is a function bound to the
operator and the value, and the per-row cost is a dict lookup and a comparison.

Comparisons follow PostgreSQL where Python differs. Numeric NaN (``float('nan')`` or
``Decimal('NaN')``) equals NaN and sorts above every number, where Python's NaN equals
nothing and ``Decimal('NaN') < 1`` raises. Text orders by code point as the "C"
collation does, which is what Python's ``str`` comparison does already. A NULL column
(None) satisfies ``eq None``, ``neq None`` never, and ``in`` only with None among its
values; as in SQL it fails every other comparison, ``not_in`` included.
A comparison never raises: a value whose type cannot be compared with the column's
is refused when the client starts (see the driver); here, a comparison that raises
anyway counts as not holding.
"""

import datetime
import decimal
import operator
import uuid
from typing import Any, Callable, Collection, FrozenSet, Mapping, Tuple, Union

import attr

from .errors import ConfigurationError
from .validators import instance_of

__all__ = ["Condition", "OPERATORS", "ORDERING_OPERATORS", "SET_OPERATORS", "is_nan", "is_number"]

#: Every operator a Condition accepts.
OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "not_in")
#: The operators that order values: None is not a value for them.
ORDERING_OPERATORS = frozenset({"lt", "lte", "gt", "gte"})
#: The operators that take several values.
SET_OPERATORS = frozenset({"in", "not_in"})

Row = Mapping[str, Any]
Test = Callable[[Row], bool]
#: What comparisons can raise on values of unexpected types: never let it out per event.
_COMPARISON_ERRORS = (TypeError, ArithmeticError)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def is_nan(value: Any) -> bool:
    """NaN of float or Decimal, quiet or signalling (comparing a signalling one raises)."""
    if isinstance(value, decimal.Decimal):
        return value.is_nan()
    return isinstance(value, float) and value != value


def _check_op(_instance: Any, _attribute: Any, op: Any) -> None:
    if op not in OPERATORS:
        raise ConfigurationError(f"Condition op must be one of {', '.join(OPERATORS)}; got {op!r}")


@attr.s(frozen=True, slots=True, repr=False)
class Condition:
    """``column`` compared with ``value`` by ``op`` (default ``"eq"``).

    ``eq None`` is IS NULL and ``neq None`` IS NOT NULL; ``in``/``not_in`` take a
    non-empty list, tuple or set (None among them stands for NULL), kept as a tuple in
    :attr:`value` and as :attr:`values`: a frozenset when every value is hashable,
    else a tuple.
    """

    column: str = attr.ib(validator=instance_of(str))
    value: Any = attr.ib(default=None)
    op: str = attr.ib(default="eq", validator=_check_op)
    #: in/not_in: the values (a frozenset when all are hashable, else a tuple); else ().
    values: Union[FrozenSet[Any], Tuple[Any, ...]] = attr.ib(init=False, eq=False)
    #: ``holds(row) -> bool``: whether the row (a dict of column -> value) satisfies it.
    holds: Test = attr.ib(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        op, value = self.op, self.value
        values: Union[FrozenSet[Any], Tuple[Any, ...]] = ()
        if op in SET_OPERATORS:
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
                raise ConfigurationError(
                    f"Condition({self.column!r}, ..., op={op!r}) takes a list, tuple or set of values; got {value!r}"
                )
            if not value:
                raise ConfigurationError(f"Condition({self.column!r}, ..., op={op!r}) needs at least one value")
            value = tuple(value)
            object.__setattr__(self, "value", value)
            try:
                values = frozenset(value)
            except TypeError:  # dicts or lists (json, arrays): compared one by one
                values = value
        elif op in ORDERING_OPERATORS and value is None:
            raise ConfigurationError(
                f"Condition({self.column!r}, None, op={op!r}): NULL is not ordered; use op='eq' for IS NULL "
                "or op='neq' for IS NOT NULL"
            )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "holds", _bind(self.column, op, value, values))

    def with_value(self, value: Any) -> "Condition":
        """The same condition with another value (a list for in/not_in): the driver's
        typed copy."""
        return Condition(self.column, value, self.op)

    def __repr__(self) -> str:
        if self.op == "eq":
            return f"Condition({self.column!r}, {self.value!r})"
        return f"Condition({self.column!r}, {self.value!r}, op={self.op!r})"


def _bind(column: str, op: str, value: Any, values: Collection[Any]) -> Test:
    if op in SET_OPERATORS:
        return _bind_set(column, op == "in", values)
    if value is None:
        if op == "eq":
            return lambda row: row.get(column) is None
        return lambda row: row.get(column) is not None
    if is_nan(value):
        return _bind_nan(column, op)
    if op == "eq":
        if isinstance(value, _PLAIN_TYPES):  # == between these and row values never raises
            return lambda row: row.get(column) == value
        return lambda row: _safe_eq(row.get(column), value)
    if op == "neq":
        if isinstance(value, _PLAIN_TYPES):
            def plain_neq(row: Row) -> bool:
                actual = row.get(column)
                return actual is not None and actual != value
            return plain_neq

        def neq(row: Row) -> bool:
            actual = row.get(column)
            return actual is not None and not _safe_eq(actual, value)
        return neq
    return _bind_order(column, _ORDER[op], value, nan_result=op in ("gt", "gte"))


#: Value types whose ``==`` with any decoded row value returns a bool and never raises
#: (a quiet Decimal NaN compares unequal without signalling).
_PLAIN_TYPES = (
    bool, int, float, decimal.Decimal, str, bytes, datetime.date, datetime.time, datetime.timedelta,
    uuid.UUID, dict, list, tuple,
)
_ORDER: Mapping[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge,
}


def _safe_eq(actual: Any, value: Any) -> bool:
    try:
        return bool(actual == value)
    except _COMPARISON_ERRORS:
        return False


def _bind_nan(column: str, op: str) -> Test:
    """Against NaN, which PostgreSQL sorts above every number and equals itself."""
    def nan_of(row: Row) -> Tuple[bool, bool]:  # (not NULL, is NaN)
        actual = row.get(column)
        return actual is not None, actual is not None and actual != actual

    tests: Mapping[str, Test] = {
        "eq": lambda row: nan_of(row)[1],
        "neq": lambda row: nan_of(row) == (True, False),
        "lt": lambda row: nan_of(row) == (True, False),
        "lte": lambda row: row.get(column) is not None,
        "gt": lambda row: False,
        "gte": lambda row: nan_of(row)[1],
    }
    return tests[op]


def _bind_order(column: str, compare: Callable[[Any, Any], bool], value: Any, nan_result: bool) -> Test:
    """``compare(actual, value)``; against a number, a NaN row value is greater (so
    ``nan_result`` is what gt and gte say), where Python says False or raises."""
    if is_number(value):
        def holds_number(row: Row) -> bool:
            actual = row.get(column)
            if actual is None:
                return False
            if actual != actual:
                return nan_result
            try:
                return compare(actual, value)
            except _COMPARISON_ERRORS:
                return False
        return holds_number

    def holds(row: Row) -> bool:
        actual = row.get(column)
        if actual is None:
            return False
        try:
            return compare(actual, value)
        except _COMPARISON_ERRORS:
            return False
    return holds


def _bind_set(column: str, inside: bool, values: Collection[Any]) -> Test:
    with_null = any(v is None for v in values)
    with_nan = any(is_nan(v) for v in values)
    listed = tuple(values)

    def member(actual: Any) -> bool:
        try:
            return actual in values
        except TypeError:  # an unhashable value (json, array) against a frozenset
            return any(_safe_eq(actual, v) for v in listed)

    if inside:
        if with_nan:
            def holds_in_with_nan(row: Row) -> bool:
                actual = row.get(column)
                if actual is None:
                    return with_null
                return is_nan(actual) or member(actual)
            return holds_in_with_nan

        def holds_in(row: Row) -> bool:
            actual = row.get(column)
            if actual is None:
                return with_null
            try:
                return actual in values
            except TypeError:
                return any(_safe_eq(actual, v) for v in listed)
        return holds_in

    def holds_not_in(row: Row) -> bool:
        actual = row.get(column)
        return actual is not None and not ((with_nan and is_nan(actual)) or member(actual))
    return holds_not_in
