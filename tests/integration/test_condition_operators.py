"""Condition operators on a real server: every operator, the NULL cases and the UPDATE
transitions, for int, numeric, text and timestamptz columns; and the values that
cannot be compared, refused by start() and attach.

What a listener should get is asked of PostgreSQL itself: each condition is evaluated
by the server on each row value (text under the "C" collation, as the API promises),
and the events follow from that by the transition rules.
"""

import datetime
from decimal import Decimal

import pytest
from psycopg2 import sql

from flash_wal import Condition, ConfigurationError, DeleteEvent, InsertEvent, Listener, Operation, UpdateEvent

from tests.support.recorder import Recorder
from tests.support.waiting import wait_for

UTC = datetime.timezone.utc
NAN = Decimal("NaN")


def at(day: int) -> datetime.datetime:
    return datetime.datetime(2026, 1, day, 12, tzinfo=UTC)


#: type -> (the row values, low < mid < high then NULL and NaN, and the middle value
#: as a str the server reads as the type)
TYPES = {
    "int": ([1, 5, 9, None], "5"),
    "numeric": ([Decimal("1.5"), Decimal("5"), Decimal("9.25"), None, NAN], "5.0"),
    "text": (["B", "a", "é", None], "a"),
    "timestamptz": ([at(1), at(5), at(9), None], "2026-01-05 13:00+01"),
}


def conditions_for(values, mid_text):
    low, mid, high = values[:3]
    ops = ("eq", "neq", "lt", "lte", "gt", "gte")
    conditions = [Condition("v", mid, op=op) for op in ops]
    conditions += [Condition("v", mid_text, op=op) for op in ("eq", "lt", "gte")]  # read by the server
    conditions += [
        Condition("v", None), Condition("v", None, op="neq"),
        Condition("v", [low, high], op="in"), Condition("v", [low, high], op="not_in"),
        Condition("v", [mid, None], op="in"), Condition("v", (mid, None), op="not_in"),
        Condition("v", {low, mid_text}, op="in"),
    ]
    if NAN in values[4:]:
        conditions += [Condition("v", NAN, op=op) for op in ops]
        conditions += [Condition("v", [NAN], op="in"), Condition("v", [NAN, low], op="not_in"),
                       Condition("v", float("nan"), op="gte")]
    return conditions


_ANSWERS = {}


def server_says(db, column_type, condition, value):
    """Whether PostgreSQL holds ``value <op> condition.value`` (with the API's NULL rules)."""
    key = (column_type, repr(condition), repr(value))
    if key not in _ANSWERS:
        _ANSWERS[key] = _ask_server(db, column_type, condition, value)
    return _ANSWERS[key]


def _ask_server(db, column_type, condition, value):
    cast = sql.SQL(column_type)
    collate = sql.SQL(' COLLATE "C"' if column_type == "text" else "")
    actual = sql.SQL("({}::{}{})").format(sql.Literal(value), cast, collate)
    if condition.op in ("in", "not_in"):
        listed = [v for v in condition.value if v is not None]
        found = sql.SQL("{} = ANY({}::{}[])").format(actual, sql.Literal([str(v) for v in listed]), cast)
        if condition.op == "in":
            query = sql.SQL("SELECT COALESCE({}, false) OR ({} IS NULL AND {})").format(
                found, actual, sql.Literal(None in condition.value))
        else:
            query = sql.SQL("SELECT {} IS NOT NULL AND NOT COALESCE({}, false)").format(actual, found)
    elif condition.value is None:
        query = sql.SQL("SELECT {} IS {}NULL").format(actual, sql.SQL("" if condition.op == "eq" else "NOT "))
    else:
        operator = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}[condition.op]
        wanted = sql.Literal(str(condition.value) if isinstance(condition.value, float) else condition.value)
        query = sql.SQL("SELECT COALESCE({} {} ({}::{}), false)").format(actual, sql.SQL(operator), wanted, cast)
    (holds,) = db.fetchone(query)
    return holds


def expected_events(db, column_type, condition, changes):
    """(kind, id, v) for rows inserted with ``before`` (a transaction each), updated to
    ``after`` (likewise), then deleted in one transaction: the events in the order of
    the transactions, and the last transaction's as a sorted list."""
    inserted, updated, deleted = [], [], []
    for row_id, before, after in changes:
        was, now = server_says(db, column_type, condition, before), server_says(db, column_type, condition, after)
        if was:
            inserted.append(("insert", row_id, before))
        if was and now:
            updated.append(("update", row_id, after))
        elif was:
            updated.append(("delete", row_id, before))
        elif now:
            updated.append(("insert", row_id, after))
        if now:
            deleted.append(("delete", row_id, after))
    return inserted + updated, deleted


def summary(event):
    if isinstance(event, InsertEvent):
        return ("insert", event.new["id"], event.new["v"])
    if isinstance(event, UpdateEvent):
        return ("update", event.new["id"], event.new["v"])
    assert isinstance(event, DeleteEvent)
    return ("delete", event.old["id"], event.old["v"])


def same_value(a, b):
    nan = lambda x: isinstance(x, Decimal) and x.is_nan()  # noqa: E731
    return (nan(a) and nan(b)) or a == b


@pytest.mark.parametrize("column_type", sorted(TYPES))
def test_every_operator_null_case_and_transition(column_type, make_client, make_table, db):
    values, mid_text = TYPES[column_type]
    table = make_table(f"id int PRIMARY KEY, v {column_type}")
    conditions = conditions_for(values, mid_text)
    recorders = []
    client = make_client()
    for condition in conditions:
        recorder = Recorder()
        listener = Listener(table=table, conditions=[condition])
        listener.on(Operation.ALL, recorder)
        client.attach(listener)
        recorders.append(recorder)
    # Every ordered pair of distinct values: each row enters, leaves, stays or never matches.
    changes = [(n, before, after) for n, (before, after) in enumerate(
        (b, a) for b in values for a in values if b is not a)]
    t = sql.Identifier(table)
    with client:
        for row_id, before, _after in changes:
            db.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(t), (row_id, before))
        for row_id, _before, after in changes:
            db.execute(sql.SQL("UPDATE {} SET v = %s WHERE id = %s").format(t), (after, row_id))
        db.execute(sql.SQL("DELETE FROM {}").format(t))
        # Last, in one transaction, a row of each value: once a listener has the ones it
        # matches, it has everything before them (one listener's events keep commit order).
        markers = [(-1 - n, value) for n, value in enumerate(values)]
        db.execute(sql.SQL("INSERT INTO {} VALUES {}").format(
            t, sql.SQL(", ").join(sql.Literal(marker) for marker in markers)))
        for condition, recorder in zip(conditions, recorders):
            ordered, deleted = expected_events(db, column_type, condition, changes)
            last = deleted + [("insert", row_id, value) for row_id, value in markers
                              if server_says(db, column_type, condition, value)]
            count = len(ordered) + len(last)
            wait_for(lambda: len(recorder) >= count, 30, f"{count} events for {condition!r}")
            got = [summary(e) for e in recorder.events]
            assert len(got) == count, (condition, got, ordered, last)
            by_place = lambda event: event[:2]  # noqa: E731 (the rows of one transaction come in heap order)
            pairs = zip(got[:len(ordered)] + sorted(got[len(ordered):], key=by_place), ordered + sorted(last, key=by_place))
            for (kind, row_id, value), (want_kind, want_id, want_value) in pairs:
                assert (kind, row_id) == (want_kind, want_id) and same_value(value, want_value), (
                    condition, got, ordered, last)


def test_values_are_typed_once_at_start_and_attach(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, n int, at timestamptz, code char(3), meta jsonb")
    early = Listener(table=table, conditions=[Condition("n", "10", op="gte"), Condition("code", "ab")])
    client = make_client()
    client.attach(early)
    assert early.conditions == early.config.conditions  # not typed before start
    with client:
        assert early.conditions == (Condition("n", 10, op="gte"), Condition("code", "ab "))
        late = Listener(table=table, conditions=[Condition("at", "2026-01-01", op="lt"),
                                                 Condition("meta", ['{"a": 1}', "[1]"], op="in")])
        recorder = Recorder()
        late.on(Operation.INSERT, recorder)
        client.attach(late)
        (before, inside) = late.conditions
        assert before.value.tzinfo is not None and inside.value == ({"a": 1}, [1])
        db.execute(sql.SQL("INSERT INTO {} (id, at, meta) VALUES (1, '2025-12-31 23:00-02', '[1]'),"
                           " (2, '2025-12-31 23:00+00', '[1]'), (3, '2025-12-31', %s)").format(
            sql.Identifier(table)), ('{"a": 2}',))
        (event,) = recorder.wait(1)  # 1 is 2026-01-01 01:00 UTC; 3 has other JSON
        assert event.new["id"] == 2


def test_a_str_for_a_text_column_is_compared_as_given(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, code varchar(3), label text")
    shorter, recorder = Listener(table=table, conditions=[Condition("code", "abcd", op="lt"),
                                                          Condition("label", " x ", op="neq")]), Recorder()
    shorter.on(Operation.INSERT, recorder)
    never = Listener(table=table, conditions=[Condition("code", "abcd")])  # no error, as in SQL
    never.on(Operation.INSERT, recorder)
    client = make_client()
    client.attach(shorter, never)
    with client:
        assert shorter.conditions == shorter.config.conditions and never.conditions == never.config.conditions
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'abc', 'x'), (2, 'abd', 'y'), (3, 'ab', ' x ')").format(
            sql.Identifier(table)))
        (event,) = recorder.wait(1)
    assert event.new["id"] == 1


@pytest.mark.parametrize("condition, message", [
    (Condition("n", "many"), 'the server cannot read \'many\' as integer'),
    (Condition("n", {"a": 1}), "on column n (type integer) cannot compare with {'a': 1} (dict)"),
    (Condition("n", [1, "x"], op="in"), "cannot read 'x' as integer"),
    (Condition("n", True), "cannot compare with True (bool): give a number"),
    (Condition("at", datetime.datetime(2026, 1, 1), op="gte"), "give a datetime.datetime with a tzinfo"),
    (Condition("title", 3, op="lt"), "on column title (type text) cannot compare with 3 (int): give a str"),
    (Condition("meta", 1, op="gt"), "cannot order values of type jsonb"),
    (Condition("nope", 1), "has no column 'nope'"),
])
def test_a_value_that_cannot_be_compared_fails_start_and_leaves_nothing(condition, message, make_client,
                                                                        make_table, db):
    table = make_table("id int PRIMARY KEY, n int, title text, at timestamptz, meta jsonb")
    listener = Listener(table=table, conditions=[condition])
    listener.on(Operation.ALL, Recorder())
    client = make_client()
    client.attach(listener)
    with pytest.raises(ConfigurationError, match=r"Listener") as failure:
        client.start()
    assert message in str(failure.value) and repr(listener) in str(failure.value)
    assert condition.column in str(failure.value)
    config = client.driver.config
    assert db.slots(config.replication_slot) == [] and db.publications(config.publication_slot_prefix) == []
    assert db.fetchone(sql.SQL("SELECT relreplident FROM pg_class WHERE oid = {}::regclass").format(
        sql.Literal(table))) == ("d",)


def test_a_bad_value_attached_after_start_fails_attach_only(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, n int")
    good, recorder = Listener(table=table, conditions=[Condition("n", 5, op="gt")]), Recorder()
    good.on(Operation.INSERT, recorder)
    client = make_client()
    client.attach(good)
    with client:
        bad = Listener(table=table, conditions=[Condition("n", "five", op="lt")])
        with pytest.raises(ConfigurationError, match="the server cannot read 'five' as integer"):
            client.attach(bad)
        assert bad not in client.listeners
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 4), (2, 6)").format(sql.Identifier(table)))
        (event,) = recorder.wait(1)
        assert event.new == {"id": 2, "n": 6}
