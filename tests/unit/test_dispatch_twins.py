"""The dispatcher's spelled-out change() gives exactly what its plain twin gives."""

import decimal
import enum

from hypothesis import given, settings
from hypothesis import strategies as st

from flash_wal import Condition, Listener, Operation
from flash_wal.dispatcher import Dispatcher
from flash_wal.table_name import TableName

TABLE = TableName("public", "t")
COLUMNS = ("id", "a", "b")
ROW = st.fixed_dictionaries({"id": st.integers(1, 3), "a": st.sampled_from([None, 1, 2]), "b": st.sampled_from(["x", "y"])})
OPERATIONS = st.sampled_from([Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.ALL,
                              Operation.INSERT | Operation.DELETE, Operation.UPDATE | Operation.DELETE])
LISTENER = st.fixed_dictionaries({
    "operations": OPERATIONS,
    "fields": st.lists(st.sampled_from(COLUMNS), unique=True, max_size=2),
    "conditions": st.lists(st.builds(Condition, st.sampled_from(("a", "b")), st.sampled_from([None, 1, "x"])),
                           max_size=1),
})
CHANGE = st.one_of(
    st.tuples(st.just(Operation.INSERT), st.none(), ROW),
    st.tuples(st.just(Operation.UPDATE), st.one_of(st.none(), ROW), ROW),
    st.tuples(st.just(Operation.DELETE), ROW, st.none()),
)


def deliveries(listener_specs, transactions, plainly):
    dispatcher = Dispatcher()
    seen = []
    for number, spec in enumerate(listener_specs):
        listener = Listener(table="t", fields=spec["fields"], conditions=spec["conditions"])
        listener.on(spec["operations"], lambda event, number=number: seen.append((number, event)))
        dispatcher.attach(listener)
    change = dispatcher.change_plainly if plainly else dispatcher.change
    lsn = 100
    for changes in transactions:
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
       transactions=st.lists(st.lists(CHANGE, max_size=5), min_size=1, max_size=4))
def test_change_and_its_plain_twin_deliver_the_same_events(listeners, transactions):
    assert deliveries(listeners, transactions, plainly=False) == deliveries(listeners, transactions, plainly=True)


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
})


@settings(max_examples=300, deadline=None)
@given(listeners=st.lists(TENANT_LISTENER, min_size=1, max_size=40),
       transactions=st.lists(st.lists(TENANT_CHANGE, max_size=6), min_size=1, max_size=3))
def test_many_listeners_on_one_column_get_what_the_plain_twin_gives(listeners, transactions):
    assert deliveries(listeners, transactions, plainly=False) == deliveries(listeners, transactions, plainly=True)
