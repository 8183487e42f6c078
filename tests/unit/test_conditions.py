"""Condition semantics without a server: operators, NULL, NaN, code-point order, and
comparisons that never raise."""

import datetime
from decimal import Decimal

import pytest

from flash_wal import Condition, ConfigurationError
from flash_wal.conditions import OPERATORS

NAN, FNAN = Decimal("NaN"), float("nan")


def holds(op, value, actual):
    return Condition("c", value, op=op).holds({"c": actual})


@pytest.mark.parametrize("op, value, message", [
    ("like", 1, "op must be one of eq, neq, lt, lte, gt, gte, in, not_in; got 'like'"),
    ("EQ", 1, "got 'EQ'"),
    ("lt", None, "NULL is not ordered"),
    ("gte", None, "NULL is not ordered"),
    ("in", [], "needs at least one value"),
    ("not_in", set(), "needs at least one value"),
    ("in", "ab", "takes a list, tuple or set"),
    ("in", 3, "takes a list, tuple or set"),
    ("not_in", {"a": 1}, "takes a list, tuple or set"),
])
def test_a_bad_condition_is_refused_when_made(op, value, message):
    with pytest.raises(ConfigurationError, match=message):
        Condition("c", value, op=op)
    with pytest.raises(ValueError):  # ConfigurationError is one
        Condition("c", value, op=op)


def test_the_default_operator_is_eq_and_attributes_stay_plain():
    condition = Condition("c", 3)
    assert (condition.column, condition.value, condition.op, condition.values) == ("c", 3, "eq", ())
    listed = Condition("c", [1, 2, None], op="in")
    assert listed.value == (1, 2, None) and listed.values == frozenset({1, 2, None})
    unhashable = Condition("c", [{"a": 1}, [1]], op="not_in")
    assert unhashable.values == ({"a": 1}, [1])
    assert Condition("c", {1, 2}, op="in") == Condition("c", (1, 2), op="in")
    assert repr(Condition("c", 3)) == "Condition('c', 3)"
    assert repr(Condition("c", 3, op="lt")) == "Condition('c', 3, op='lt')"


@pytest.mark.parametrize("op, low, equal, high", [
    ("eq", False, True, False), ("neq", True, False, True),
    ("lt", True, False, False), ("lte", True, True, False),
    ("gt", False, False, True), ("gte", False, True, True),
])
@pytest.mark.parametrize("values", [
    (1, 5, 9), (Decimal("1.5"), Decimal("5"), Decimal("9.25")), (1.5, 5.0, 9.25),
    ("B", "a", "é"),  # code-point order: "B" < "a" < "é", as under the "C" collation
    (datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
     datetime.datetime(2026, 1, 5, 13, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
     datetime.datetime(2026, 1, 9, tzinfo=datetime.timezone.utc)),
])
def test_comparisons(op, low, equal, high, values):
    below, middle, above = values
    reference = {"eq": middle, "neq": middle, "lt": middle, "lte": middle, "gt": middle, "gte": middle}[op]
    if isinstance(reference, datetime.datetime):
        reference = datetime.datetime(2026, 1, 5, 12, tzinfo=datetime.timezone.utc)  # the same instant
    assert [holds(op, reference, v) for v in (below, middle, above)] == [low, equal, high]
    assert not holds(op, reference, None)  # NULL fails every comparison with a value


def test_text_orders_by_code_point_whatever_the_locale():
    words = ["é", "a", "B", "Z", "ä", "", "😀", "aa"]
    assert [w for w in words if holds("lt", "a", w)] == ["B", "Z", ""]
    assert sorted(words) == ["", "B", "Z", "a", "aa", "ä", "é", "😀"]
    assert [w for w in words if holds("gte", "ä", w)] == ["é", "ä", "😀"]


@pytest.mark.parametrize("nan", [NAN, FNAN])
@pytest.mark.parametrize("number", [Decimal("1e308"), Decimal("Infinity"), 7, -1.5, float("inf")])
def test_nan_equals_nan_and_sorts_above_every_number(nan, number):
    # NaN as the row's value
    assert holds("eq", nan, NAN) and holds("eq", nan, FNAN)
    assert not holds("neq", nan, NAN) and not holds("eq", number, nan)
    assert holds("neq", number, nan)
    assert holds("gt", number, nan) and holds("gte", number, nan)
    assert not holds("lt", number, nan) and not holds("lte", number, nan)
    # NaN as the condition's value
    assert holds("lt", nan, number) and holds("lte", nan, number) and holds("neq", nan, number)
    assert not holds("gt", nan, number) and not holds("gte", nan, number) and not holds("eq", nan, number)
    assert holds("lte", nan, nan) and holds("gte", nan, nan) and not holds("lt", nan, nan) and not holds("gt", nan, nan)
    # in / not_in
    assert holds("in", [nan, 3], NAN) and holds("in", [nan], FNAN) and not holds("not_in", [nan], NAN)
    assert not holds("in", [number], nan) and holds("not_in", [number], nan)
    assert not holds("lt", nan, None) and not holds("gte", nan, None) and not holds("eq", nan, None)


def test_null_semantics():
    assert holds("eq", None, None) and not holds("eq", None, 0) and not holds("eq", None, "")
    assert holds("neq", None, 0) and holds("neq", None, False) and not holds("neq", None, None)
    assert not holds("neq", 3, None)  # as in SQL: NULL <> 3 is not true
    assert holds("in", [1, None], None) and holds("in", [1, None], 1) and not holds("in", [1, None], 2)
    assert not holds("in", [1], None)
    assert not holds("not_in", [1], None) and not holds("not_in", [1, None], None)
    assert holds("not_in", [1, None], 2) and not holds("not_in", [1, None], 1)
    assert not Condition("c", 1).holds({})  # a column the row lacks is NULL


def test_in_and_not_in():
    assert holds("in", (1, 2), 2) and holds("in", (1, 2), Decimal("2.0")) and not holds("in", (1, 2), 3)
    assert holds("not_in", {"a", "b"}, "c") and not holds("not_in", {"a", "b"}, "a")
    # json values: unhashable, compared one by one
    assert holds("in", [{"a": 1}, [1, 2]], {"a": 1}) and not holds("in", [{"a": 1}], {"a": 2})
    assert holds("not_in", [{"a": 1}], [1]) and holds("in", ["x"], "x")
    # an unhashable row value against hashable listed values
    assert not holds("in", ["x", 1], {"a": 1}) and holds("not_in", ["x", 1], {"a": 1})


@pytest.mark.parametrize("op", OPERATORS)
@pytest.mark.parametrize("value, actual", [
    (3, "3"), ("3", 3), (datetime.datetime(2026, 1, 1), datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)),
    (datetime.date(2026, 1, 1), datetime.datetime(2026, 1, 1)), (NAN, "x"), (1, {"a": 1}), ([1], [None, 2]),
])
def test_a_comparison_of_types_that_do_not_compare_never_raises(op, value, actual):
    if op in ("in", "not_in"):
        value = [value]
    assert holds(op, value, actual) in (True, False)


def test_holds_is_bound_when_the_condition_is_made():
    condition = Condition("c", 5, op="gt")
    assert condition.holds is condition.holds  # an attribute, not a method built per call
    assert condition.with_value(1) == Condition("c", 1, op="gt") and condition.with_value(1).holds({"c": 2})
