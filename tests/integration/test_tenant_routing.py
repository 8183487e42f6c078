"""One listener per tenant on a real server: each gets its tenant's rows and only those,
rows moving between tenants leave one and enter the other, and listeners attached or
detached while changes flow take effect at once (the dispatcher's index of routes)."""

from psycopg2 import sql

from flash_wal import Condition, DeleteEvent, InsertEvent, Listener, Operation, UpdateEvent

from tests.support.recorder import Recorder

TENANTS = 50


def summary(events):
    return [(type(event).__name__, (event.old if isinstance(event, DeleteEvent) else event.new)["id"])
            for event in events]


def test_fifty_tenant_listeners_each_get_their_tenants_changes(make_client, make_table, db):
    table = make_table("id int PRIMARY KEY, tenant_id int, title text")
    t = sql.Identifier(table)
    recorders = {tenant: Recorder() for tenant in range(TENANTS + 1)}
    listeners = {}
    client = make_client()
    for tenant in range(TENANTS):
        listeners[tenant] = Listener(table=table, conditions=[Condition("tenant_id", tenant)])
        listeners[tenant].on(Operation.ALL, recorders[tenant])
    client.attach(*listeners.values())
    with client:
        db.execute(sql.SQL("INSERT INTO {} SELECT i, i % {}, 'row ' || i FROM generate_series(0, 199) i").format(
            t, sql.Literal(TENANTS)))
        db.execute(sql.SQL("UPDATE {} SET tenant_id = 2 WHERE id = 1").format(t))  # tenant 1 -> 2
        db.execute(sql.SQL("UPDATE {} SET title = 'renamed' WHERE id = 3").format(t))  # stays in tenant 3
        db.execute(sql.SQL("DELETE FROM {} WHERE id = 4").format(t))
        db.execute(sql.SQL("INSERT INTO {} VALUES (1000, NULL, 'no tenant')").format(t))
        for tenant in range(TENANTS):
            recorders[tenant].wait(4 + (tenant in (1, 2, 3, 4)))
        late = Listener(table=table, conditions=[Condition("tenant_id", TENANTS)])
        late.on(Operation.ALL, recorders[TENANTS])
        client.attach(late)
        client.detach(listeners[TENANTS - 1])
        db.execute(sql.SQL("INSERT INTO {} VALUES (1001, %s, 'left'), (1002, %s, 'late')").format(t),
                   (TENANTS - 1, TENANTS))
        recorders[TENANTS].wait(1)
        db.execute(sql.SQL("INSERT INTO {} VALUES (1003, 0, 'last')").format(t))
        recorders[0].wait(5)
    inserted = {tenant: [("InsertEvent", i) for i in range(tenant, 200, TENANTS)] for tenant in range(TENANTS)}
    assert summary(recorders[1].events) == inserted[1] + [("DeleteEvent", 1)]
    assert summary(recorders[2].events) == inserted[2] + [("InsertEvent", 1)]
    assert summary(recorders[3].events) == inserted[3] + [("UpdateEvent", 3)]
    assert isinstance(recorders[3].events[-1], UpdateEvent) and recorders[3].events[-1].new["title"] == "renamed"
    assert summary(recorders[4].events) == inserted[4] + [("DeleteEvent", 4)]
    assert summary(recorders[0].events) == inserted[0] + [("InsertEvent", 1003)]
    assert summary(recorders[TENANTS - 1].events) == inserted[TENANTS - 1]  # detached before 1001
    assert summary(recorders[TENANTS].events) == [("InsertEvent", 1002)]
    for tenant in range(5, TENANTS - 1):
        assert summary(recorders[tenant].events) == inserted[tenant]
    assert all(isinstance(event, InsertEvent) for event in recorders[2].events)


def test_tenants_given_as_text_are_routed_by_their_typed_values(make_client, make_table, db):
    # "7" for an int column is read as 7 by the server at start (and at attach): the
    # index must hold 7, or the tenant's rows would never reach its listener.
    table = make_table("id int PRIMARY KEY, tenant_id int, title text")
    recorders = {tenant: Recorder() for tenant in ("7", "8", "9")}
    client = make_client()
    for tenant in ("7", "8"):
        client.on(table, Operation.INSERT, conditions=[Condition("tenant_id", tenant)])(recorders[tenant])
    with client:
        client.on(table, Operation.INSERT, conditions=[Condition("tenant_id", ["9"], op="in")])(recorders["9"])
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 7, 'a'), (2, 8, 'b'), (3, 9, 'c'), (4, 1, 'd')").format(
            sql.Identifier(table)))
        for tenant in recorders:
            recorders[tenant].wait(1)
    assert {tenant: summary(recorder.events) for tenant, recorder in recorders.items()} == {
        "7": [("InsertEvent", 1)], "8": [("InsertEvent", 2)], "9": [("InsertEvent", 3)]}
