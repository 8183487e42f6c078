"""The dispatcher's spelled-out change() gives exactly what its plain twin gives, keys
and key changes included; and what a key change gives."""

import decimal
import enum

from hypothesis import given, settings
from hypothesis import strategies as st

from flash_wal import Condition, DeleteEvent, InsertEvent, Listener, Operation, UpdateEvent
from flash_wal.dispatcher import Dispatcher
from flash_wal.table_name import TableName

TABLE = TableName("public", "t")
COLUMNS = ("id", "a", "b")
ROW = st.fixed_dictionaries({"id": st.integers(1, 3), "a": st.sampled_from([None, 1, 2]), "b": st.sampled_from(["x", "y"])})
# What the server sends as the old row without REPLICA IDENTITY FULL: the key only.
OLD_KEY = ROW.map(lambda row: {"id": row["id"]})
KEYS = st.sampled_from([(), ("id",), ("a", "id")])
OPERATIONS = st.sampled_from([Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.ALL,
                              Operation.INSERT | Operation.DELETE, Operation.UPDATE | Operation.DELETE])
LISTENER = st.fixed_dictionaries({
    "operations": OPERATIONS,
    "fields": st.lists(st.sampled_from(COLUMNS), unique=True, max_size=2),
    "conditions": st.lists(st.builds(Condition, st.sampled_from(("a", "b")), st.sampled_from([None, 1, "x"])),
                           max_size=1),
    "primary_key": KEYS,
})
CHANGE = st.one_of(
    st.tuples(st.just(Operation.INSERT), st.none(), ROW),
    st.tuples(st.just(Operation.UPDATE), st.one_of(st.none(), ROW, OLD_KEY), ROW),
    st.tuples(st.just(Operation.DELETE), st.one_of(ROW, OLD_KEY), st.none()),
)
# Before a transaction, maybe a Relation message with the table's key (a schema change).
TRANSACTION = st.tuples(st.one_of(st.none(), KEYS), st.lists(CHANGE, max_size=5))


def deliveries(listener_specs, transactions, plainly):
    dispatcher = Dispatcher()
    seen = []
    for number, spec in enumerate(listener_specs):
        listener = Listener(table="t", fields=spec["fields"], conditions=spec["conditions"],
                            primary_key=spec["primary_key"])
        listener.on(spec["operations"], lambda event, number=number: seen.append((number, event)))
        dispatcher.attach(listener)
    change = dispatcher.change_plainly if plainly else dispatcher.change
    lsn = 100
    for table_key, changes in transactions:
        if table_key is not None:
            dispatcher.table_key(TABLE, table_key)
        txn = dispatcher.begin(lsn + 50, lsn, None)
        for operation, old, new in changes:
            lsn += 1
            change(txn, operation, TABLE, lsn, old, new)
        lsn += 100
        dispatcher.commit(txn, lsn)
    assert dispatcher.drain(10)
    acked = dispatcher.acked_lsn
    dispatcher.close()
    # Workers of different listeners interleave freely; each listener's own order counts.
    return sorted(seen, key=lambda item: item[0]), acked


@settings(max_examples=300, deadline=None)
@given(listeners=st.lists(LISTENER, min_size=1, max_size=3),
       transactions=st.lists(TRANSACTION, min_size=1, max_size=4))
def test_change_and_its_plain_twin_deliver_the_same_events(listeners, transactions):
    assert deliveries(listeners, transactions, plainly=False) == deliveries(listeners, transactions, plainly=True)


def test_a_key_change_is_a_delete_then_an_insert_to_the_callbacks_of_each():
    old, new = {"id": 1, "a": 1, "b": "x"}, {"id": 2, "a": 1, "b": "y"}
    specs = [
        {"operations": Operation.ALL, "fields": [], "conditions": [], "primary_key": ()},
        {"operations": Operation.INSERT, "fields": [], "conditions": [], "primary_key": ()},
        {"operations": Operation.UPDATE, "fields": [], "conditions": [], "primary_key": ()},
        {"operations": Operation.ALL, "fields": ["a"], "conditions": [Condition("b", "y")], "primary_key": ()},
        {"operations": Operation.ALL, "fields": [], "conditions": [], "primary_key": ("a",)},
    ]
    for plainly in (False, True):
        seen, _ = deliveries(specs, [(("id",), [(Operation.UPDATE, old, new)])], plainly)
        assert [(number, type(event), event.key) for number, event in seen] == [
            (0, DeleteEvent, (1,)), (0, InsertEvent, (2,)),
            (1, InsertEvent, (2,)),
            (3, InsertEvent, (2,)),  # the old row did not match: no delete
            (4, UpdateEvent, (1,)),  # its own key did not change
        ]
        everything = [event for number, event in seen if number == 0]
        assert everything[0].old == old and everything[1].new == new
        assert everything[0].lsn == everything[1].lsn and everything[0].commit_lsn == everything[1].commit_lsn
        assert seen[3][1].new == {"a": 1}


def test_without_a_relation_the_configured_key_still_holds():
    specs = [{"operations": Operation.INSERT, "fields": ["b"], "conditions": [], "primary_key": ("a", "id")},
             {"operations": Operation.INSERT, "fields": [], "conditions": [], "primary_key": ()}]
    seen, _ = deliveries(specs, [(None, [(Operation.INSERT, None, {"id": 3, "a": 2, "b": "x"})])], plainly=False)
    assert [(number, event.key) for number, event in seen] == [(0, (2, 3)), (1, None)]


# Many listeners with equality conditions on one column, as a multi-tenant application
# has: the index of routes must reach exactly the listeners the plain twin does. The
# values mix NULL, numbers that are equal across types (1, 1.0, Decimal 1, True), an
# IntEnum (a subclass the index does not trust), a value equal to 1 with another
# hash, an unhashable list and a quiet NaN.
class Tier(enum.IntEnum):
    ONE = 1
    TWO = 2


class LooselyOne:
    """Equal to 1 but hashed otherwise: a type whose values the index must not trust."""

    def __eq__(self, other):
        return other == 1

    def __hash__(self):
        return 12345


TENANT_VALUES = [None, 0, 1, 2, 3, 1.0, decimal.Decimal(1), True, Tier.TWO, [1], float("nan"), "1", LooselyOne()]
TENANT_ROW = st.fixed_dictionaries({
    "id": st.integers(1, 3), "a": st.sampled_from(TENANT_VALUES), "b": st.sampled_from(["x", "y"]),
})
TENANT_CHANGE = st.one_of(
    st.tuples(st.just(Operation.INSERT), st.none(), TENANT_ROW),
    st.tuples(st.just(Operation.UPDATE), st.one_of(st.none(), TENANT_ROW), TENANT_ROW),
    st.tuples(st.just(Operation.DELETE), TENANT_ROW, st.none()),
)
TENANT_LISTENER = st.fixed_dictionaries({
    "operations": OPERATIONS,
    "fields": st.lists(st.sampled_from(COLUMNS), unique=True, max_size=1),
    "conditions": st.one_of(
        st.lists(st.builds(Condition, st.just("a"), st.sampled_from(TENANT_VALUES)), min_size=1, max_size=1),
        st.tuples(st.builds(Condition, st.just("b"), st.sampled_from(["x", "y"])),
                  st.builds(Condition, st.just("a"), st.sampled_from(TENANT_VALUES))).map(list),
        st.lists(st.builds(Condition, st.just("b"), st.sampled_from([None, "x"])), max_size=1),
    ),
    "primary_key": KEYS,
})


@settings(max_examples=300, deadline=None)
@given(listeners=st.lists(TENANT_LISTENER, min_size=1, max_size=40),
       transactions=st.lists(st.tuples(st.one_of(st.none(), KEYS), st.lists(TENANT_CHANGE, max_size=6)),
                             min_size=1, max_size=3))
def test_many_listeners_on_one_column_get_what_the_plain_twin_gives(listeners, transactions):
    assert deliveries(listeners, transactions, plainly=False) == deliveries(listeners, transactions, plainly=True)
