"""The index of routes by equality conditions: which listeners a change reaches."""

import decimal
import threading
import types

from flash_wal import Condition, DeleteEvent, InsertEvent, Listener, Operation, UpdateEvent
from flash_wal.dispatcher import Dispatcher
from flash_wal.dispatcher.route_index import TableRoutes, index_values
from flash_wal.table_name import TableName

TABLE = TableName("public", "t")


class stand_in:
    """What TableRoutes reads of a route: its conditions."""

    def __init__(self, *conditions):
        self.conditions = conditions


class Harness:
    """A dispatcher with one recording callback per listener, fed by hand."""

    def __init__(self):
        self.dispatcher = Dispatcher()
        self.seen = {}
        self.lsn = 100

    def listen(self, name, *conditions, operations=Operation.ALL):
        listener = Listener(table="t", conditions=list(conditions))
        self.seen[name] = []
        listener.on(operations, self.seen[name].append)
        self.dispatcher.attach(listener)
        return listener

    def run(self, *changes):
        txn = self.dispatcher.begin(self.lsn + 50, self.lsn, None)
        for operation, old, new in changes:
            self.lsn += 1
            self.dispatcher.change(txn, operation, TABLE, self.lsn, old, new)
        self.lsn += 100
        self.dispatcher.commit(txn, self.lsn)
        assert self.dispatcher.drain(10)

    def kinds(self, name):
        return [(type(event).__name__, (getattr(event, "old", None) or {}).get("tenant_id"),
                 (getattr(event, "new", None) or {}).get("tenant_id"))
                for event in self.seen[name]]


def row(tenant, id=1, **extra):
    return {"id": id, "tenant_id": tenant, **extra}


# --- what can be indexed ------------------------------------------------------------------


def test_equality_on_a_plain_value_is_indexed_and_null_is_not():
    assert index_values(Condition("tenant_id", 7)) == (7,)
    assert index_values(Condition("tenant_id", "acme")) == ("acme",)
    assert index_values(Condition("tenant_id", None)) is None  # IS NULL: checked as before


def test_unhashable_and_untrusted_values_are_not_indexed():
    assert index_values(Condition("tags", [1, 2])) is None
    assert index_values(Condition("doc", {"a": 1})) is None
    assert index_values(Condition("x", decimal.Decimal("sNaN"))) is None  # cannot be hashed
    assert index_values(Condition("x", object())) is None  # hashable, of a type not trusted


def test_operators_other_than_eq_and_in_are_not_indexed():
    # Written against the Condition of the operators to come: op and values.
    assert index_values(types.SimpleNamespace(column="n", value=3, op="neq")) is None
    assert index_values(types.SimpleNamespace(column="n", value=3, op="gte")) is None
    assert index_values(types.SimpleNamespace(column="n", value=None, op="in", values=(1, 2))) == (1, 2)
    assert index_values(types.SimpleNamespace(column="n", value=None, op="in", values=(1, None))) is None
    assert index_values(types.SimpleNamespace(column="n", value=None, op="not_in", values=(1, 2))) is None


def test_a_change_reaches_its_tenants_routes_and_the_unindexed_in_attach_order():
    first, unindexed, second, in_route, also_first = (
        stand_in(Condition("tenant_id", 1)),
        stand_in(Condition("status", None)),
        stand_in(Condition("tenant_id", 2)),
        stand_in(types.SimpleNamespace(column="tenant_id", value=None, op="in", values=(2, 3))),
        stand_in(Condition("status", None), Condition("tenant_id", 1)),
    )
    table = TableRoutes((first, unindexed, second, in_route, also_first))
    assert list(table.reached_by(None, row(1))) == [first, unindexed, also_first]
    assert list(table.reached_by(None, row(3))) == [unindexed, in_route]
    assert list(table.reached_by(row(1), row(2))) == [first, unindexed, second, in_route, also_first]
    assert list(table.reached_by(None, row(None))) == [unindexed]
    assert list(table.reached_by(None, {"id": 1})) == [unindexed]  # no such column: NULL


def test_a_row_value_the_index_cannot_trust_reaches_every_route_on_its_column():
    one, two = stand_in(Condition("tenant_id", 1)), stand_in(Condition("tenant_id", 2))
    table = TableRoutes((one, two))
    assert list(table.reached_by(None, row([1]))) == [one, two]  # unhashable
    assert list(table.reached_by(None, row(object()))) == [one, two]  # hashable, of a type not trusted
    assert list(table.reached_by(None, row(decimal.Decimal(2)))) == [two]  # equal to 2, hashed alike
    assert list(table.reached_by(None, row(4))) == []


# --- through the dispatcher ---------------------------------------------------------------


def test_a_row_moving_between_tenants_leaves_one_listener_and_enters_the_other():
    harness = Harness()
    for tenant in (1, 2, 3):
        harness.listen(tenant, Condition("tenant_id", tenant))
    harness.run((Operation.UPDATE, row(1), row(2)))
    assert harness.kinds(1) == [("DeleteEvent", 1, None)]
    assert harness.kinds(2) == [("InsertEvent", None, 2)]
    assert harness.kinds(3) == []


def test_an_update_within_a_tenant_is_an_update_and_without_old_row_reaches_the_new_tenant():
    harness = Harness()
    for tenant in (1, 2):
        harness.listen(tenant, Condition("tenant_id", tenant))
    harness.run((Operation.UPDATE, row(1, title="a"), row(1, title="b")), (Operation.UPDATE, None, row(2)))
    assert harness.kinds(1) == [("UpdateEvent", 1, 1)]
    assert harness.kinds(2) == [("UpdateEvent", None, 2)]


def test_an_insert_or_delete_listener_hears_a_row_entering_or_leaving_its_tenant():
    harness = Harness()
    harness.listen("inserts", Condition("tenant_id", 2), operations=Operation.INSERT)
    harness.listen("deletes", Condition("tenant_id", 1), operations=Operation.DELETE)
    harness.run((Operation.UPDATE, row(1), row(2)))
    assert [type(event) for event in harness.seen["inserts"]] == [InsertEvent]
    assert [type(event) for event in harness.seen["deletes"]] == [DeleteEvent]


def test_null_conditions_and_unhashable_values_are_checked_beside_the_index():
    harness = Harness()
    harness.listen("tenant 1", Condition("tenant_id", 1))
    harness.listen("no tenant", Condition("tenant_id", None))
    harness.listen("tags", Condition("tags", [1, 2]))
    harness.run((Operation.INSERT, None, row(None, tags=[1, 2])), (Operation.INSERT, None, row(1, tags=[3])))
    assert harness.kinds("no tenant") == [("InsertEvent", None, None)]
    assert harness.kinds("tags") == [("InsertEvent", None, None)]
    assert harness.kinds("tenant 1") == [("InsertEvent", None, 1)]


def test_attach_and_detach_update_the_index():
    harness = Harness()
    first = harness.listen(1, Condition("tenant_id", 1))
    harness.run((Operation.INSERT, None, row(1)), (Operation.INSERT, None, row(2)))
    harness.listen(2, Condition("tenant_id", 2))
    harness.listen("also 1", Condition("tenant_id", 1))
    harness.run((Operation.INSERT, None, row(1)), (Operation.INSERT, None, row(2)))
    harness.dispatcher.detach(first)
    harness.run((Operation.DELETE, row(1), None), (Operation.DELETE, row(2), None))
    assert harness.kinds(1) == [("InsertEvent", None, 1), ("InsertEvent", None, 1)]
    assert harness.kinds("also 1") == [("InsertEvent", None, 1), ("DeleteEvent", 1, None)]
    assert harness.kinds(2) == [("InsertEvent", None, 2), ("DeleteEvent", 2, None)]


def test_the_last_detach_of_a_table_removes_its_index():
    harness = Harness()
    listener = harness.listen(1, Condition("tenant_id", 1))
    harness.dispatcher.detach(listener)
    assert not harness.dispatcher.wants(TABLE)
    harness.run((Operation.INSERT, None, row(1)))
    assert harness.seen[1] == []


def test_attach_and_detach_while_changes_flow_lose_nothing_of_the_listeners_that_stay():
    harness = Harness()
    harness.listen("steady", Condition("tenant_id", 0))
    stop = threading.Event()

    def churn():
        tenant = 1
        while not stop.is_set():
            listener = Listener(table="t", conditions=[Condition("tenant_id", tenant % 7)])
            listener.on(Operation.ALL, lambda event: None)
            harness.dispatcher.attach(listener)
            harness.dispatcher.detach(listener)
            tenant += 1

    churning = threading.Thread(target=churn)
    churning.start()
    try:
        for batch in range(200):
            harness.run(*[(Operation.INSERT, None, row(i % 3, id=batch * 10 + i)) for i in range(10)])
    finally:
        stop.set()
        churning.join()
    ids = [event.new["id"] for event in harness.seen["steady"]]
    assert ids == [batch * 10 + i for batch in range(200) for i in range(10) if i % 3 == 0]
    assert all(isinstance(event, InsertEvent) for event in harness.seen["steady"])


def test_update_events_keep_their_shape_through_the_index():
    harness = Harness()
    harness.listen(1, Condition("tenant_id", 1))
    harness.run((Operation.UPDATE, None, row(1, title="b")))
    (event,) = harness.seen[1]
    assert isinstance(event, UpdateEvent) and event.new == row(1, title="b") and event.old is None
