"""The dispatcher's spelled-out change() gives exactly what its plain twin gives."""

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
