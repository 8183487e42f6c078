"""DriverConfig(server_filters=True): the listeners' conditions as publication row filters."""

import logging
import types

import attr
import pytest
from psycopg2 import sql

from flash_wal import Client, Condition, Listener, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig, row_filters

from tests.support.publications import publication_of
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def execute(db, statement, table, *args):
    db.execute(sql.SQL(statement).format(sql.Identifier(table)), args or None)


def row_filter(db, config, operation, table):
    row = db.fetchone("SELECT rowfilter FROM pg_publication_tables WHERE pubname = %s AND tablename = %s",
                      (publication_of(config, operation), table))
    return None if row is None else row[0]


def filtered_client(make_client, unique, server_filters, **options):
    name = f"f{int(server_filters)}_{unique}"
    return make_client(driver=Driver(DriverConfig(publication_slot_prefix=f"p_{name}", replication_slot=name,
                                                  server_filters=server_filters, **options)))


def shape(event):
    return type(event).__name__, getattr(event, "old", None), getattr(event, "new", None), event.xid


@pytest.fixture
def needs_filters(server_version):
    if server_version < 150000:
        pytest.skip("row filters need PostgreSQL 15")


def workload(db, table):
    """Rows entering, leaving, staying in and out of the conditions, and deletes."""
    execute(db, "INSERT INTO {} (n, status) SELECT i, CASE WHEN i % 100 = 0 THEN 'a' ELSE 'b' END"
                " FROM generate_series(1, 1000) i", table)
    execute(db, "UPDATE {} SET status = 'a' WHERE n % 250 = 1", table)           # enter
    execute(db, "UPDATE {} SET status = 'b' WHERE n = 100", table)               # leave
    execute(db, "UPDATE {} SET n = n + 10000 WHERE status = 'a' AND n < 500", table)  # stay in
    execute(db, "UPDATE {} SET n = n + 20000 WHERE n BETWEEN 600 AND 650", table)     # stay out
    execute(db, "UPDATE {} SET status = NULL WHERE n = 700", table)
    execute(db, "DELETE FROM {} WHERE n % 200 = 0 OR n = 700", table)
    execute(db, "INSERT INTO {} (n, status) VALUES (5000, 'a')", table)


def test_events_are_the_same_with_server_filters_on_and_off(make_client, make_table, db, unique, needs_filters):
    table = make_table("id serial PRIMARY KEY, n int, status text")
    clients, recorders = {}, {}
    for server_filters in (False, True):
        clients[server_filters] = client = filtered_client(make_client, unique, server_filters)
        recorders[server_filters] = {}
        for name, conditions in (("a", [Condition("status", "a")]), ("null", [Condition("status", None)])):
            listener = Listener(table=table, conditions=conditions)
            listener.on(Operation.ALL, recorders[server_filters].setdefault(name, Recorder()))
            client.attach(listener)
        client.start()
    config = clients[True].driver.config
    for operation in (Operation.INSERT, Operation.UPDATE, Operation.DELETE):
        assert row_filter(db, config, operation, table) == "((status = 'a'::text) OR (status IS NULL))"
    assert row_filter(db, clients[False].driver.config, Operation.INSERT, table) is None
    before = {key: client.stats()["bytes_received"] for key, client in clients.items()}
    workload(db, table)
    # "a": 10 inserted, 4 entering, 1 leaving, 6 staying in, 1 leaving for NULL, 5 deleted, 1 inserted;
    # "null": 1 entering, 1 deleted.
    expected = {"a": 28, "null": 2}
    for server_filters, by_name in recorders.items():
        for name, recorder in by_name.items():
            recorder.wait(expected[name])
    # The last change reached both: nothing else is on its way.
    for name in expected:
        assert [shape(e) for e in recorders[True][name].events] == [shape(e) for e in recorders[False][name].events]
        assert len(recorders[True][name].events) == expected[name]
    sent = {key: client.stats()["bytes_received"] - before[key] for key, client in clients.items()}
    assert sent[True] * 5 < sent[False], sent


def test_nothing_is_pushed_for_a_listener_without_conditions_or_a_type_compared_differently(
        make_client, make_table, db, unique, needs_filters, caplog):
    db.execute(sql.SQL("CREATE TYPE {} AS ENUM ('a', 'b')").format(sql.Identifier(f"mood_{unique}")))
    try:
        table = make_table(f"id serial PRIMARY KEY, status text, mood mood_{unique}, doc json")
        client = filtered_client(make_client, unique, True)
        client.on(table, Operation.INSERT, conditions=[Condition("status", "a")])(lambda event: None)
        client.on(table, Operation.UPDATE, conditions=[Condition("mood", "a")])(lambda event: None)
        with caplog.at_level(logging.DEBUG, logger="flash_wal"), client:
            config = client.driver.config
            assert row_filter(db, config, Operation.INSERT, table) == "(status = 'a'::text)"
            # UPDATE is needed by both (transitions of the first): the second's enum is not pushed.
            assert row_filter(db, config, Operation.UPDATE, table) is None
            assert f"column 'mood' is of type mood_{unique}" in caplog.text
            client.on(table, Operation.INSERT)(lambda event: None)  # no condition: nothing pushed
            assert row_filter(db, config, Operation.INSERT, table) is None
    finally:
        db.execute(sql.SQL("DROP TYPE {} CASCADE").format(sql.Identifier(f"mood_{unique}")))


def test_without_full_identity_updates_and_deletes_are_filtered_on_key_columns_only(
        make_client, make_table, db, unique, needs_filters):
    table = make_table("id int PRIMARY KEY, status text")
    recorder = Recorder()
    client = filtered_client(make_client, unique, True, replica_identity_full=False)
    client.on(table, Operation.INSERT | Operation.DELETE, conditions=[Condition("status", "a")])(recorder)
    with client:
        config = client.driver.config
        assert row_filter(db, config, Operation.INSERT, table) == "(status = 'a'::text)"
        assert row_filter(db, config, Operation.DELETE, table) is None
        execute(db, "INSERT INTO {} VALUES (1, 'a'), (2, 'b')", table)
        execute(db, "UPDATE {} SET status = 'c'", table)  # the application's writes still work
        execute(db, "DELETE FROM {}", table)
        assert [e.new["id"] for e in recorder.wait(1)] == [1]


def test_attach_and_detach_change_the_filter_to_the_or_of_the_listeners(
        make_client, make_table, db, unique, needs_filters):
    table = make_table("id serial PRIMARY KEY, n int")
    first, second = Recorder(), Recorder()
    client = filtered_client(make_client, unique, True)
    client.on(table, Operation.INSERT, conditions=[Condition("n", 1)])(first)
    with client:
        config = client.driver.config
        listener = Listener(table=table, conditions=[Condition("n", 2)])
        listener.on(Operation.INSERT, second)
        client.attach(listener)
        assert row_filter(db, config, Operation.INSERT, table) == "((n = 1) OR (n = 2))"
        execute(db, "INSERT INTO {} (n) VALUES (1), (2), (3)", table)
        assert [e.new["n"] for e in second.wait(1)] == [2]
        client.detach(listener)
        assert row_filter(db, config, Operation.INSERT, table) == "(n = 1)"
        execute(db, "INSERT INTO {} (n) VALUES (2), (1)", table)
        assert [e.new["n"] for e in first.wait(2)] == [1, 1]


def test_older_servers_ignore_server_filters_with_one_info_line(make_client, make_table, db, unique, server_version,
                                                                caplog):
    if server_version >= 150000:
        pytest.skip("PostgreSQL 15 and later have row filters")
    table = make_table()
    recorder = Recorder()
    client = filtered_client(make_client, unique, True)
    client.on(table, Operation.INSERT, conditions=[Condition("title", "a")])(recorder)
    with caplog.at_level(logging.INFO, logger="flash_wal"), client:
        client.on(table, Operation.INSERT, conditions=[Condition("title", "b")])(recorder)
        execute(db, "INSERT INTO {} (title) VALUES ('a')", table)
        recorder.wait(1)
    assert caplog.text.count("server_filters=True is ignored") == 1


# Every operator, as the server evaluates its filter, against the API's NULL semantics.
OPERATOR_CASES = [
    ("eq", 2, [False, True, False, False]), ("eq", None, [False, False, False, True]),
    ("neq", 2, [True, False, True, False]), ("neq", None, [True, True, True, False]),
    ("lt", 2, [True, False, False, False]), ("lte", 2, [True, True, False, False]),
    ("gt", 2, [False, False, True, False]), ("gte", 2, [False, True, True, False]),
    ("in", (1, 3), [True, False, True, False]), ("in", (1, None), [True, False, False, True]),
    ("not_in", (1, 3), [False, True, False, False]), ("not_in", (1, None), [False, True, True, False]),
    ("not_in", (None,), [True, True, True, False]),
]


@pytest.mark.parametrize("op, value, expected", OPERATOR_CASES)
def test_each_operator_filters_as_the_client_compares(make_table, db, op, value, expected):
    table = make_table("id int PRIMARY KEY, n int")
    execute(db, "INSERT INTO {} VALUES (1, 1), (2, 2), (3, 3), (4, NULL)", table)
    info = types.SimpleNamespace(oid=db.fetchone("SELECT %s::regclass::oid::int8", (table,))[0])
    condition = types.SimpleNamespace(column="n", value=value, op=op)
    cursor = db.conn.cursor()
    columns = row_filters._columns(cursor, info)
    expression = row_filters._condition(cursor, condition, columns, Operation.INSERT)
    cursor.execute(sql.SQL("SELECT coalesce({}, false) FROM {} ORDER BY id").format(expression, sql.Identifier(table)))
    assert [row[0] for row in cursor.fetchall()] == expected


def test_a_dropped_publication_is_made_again_with_its_filters(make_client, make_table, db, unique, needs_filters):
    table = make_table("id serial PRIMARY KEY, n int")
    recorder = Recorder()
    client = filtered_client(make_client, unique, True)
    client.on(table, Operation.INSERT, conditions=[Condition("n", 1)])(recorder)
    with client:
        config = client.driver.config
        db.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication_of(config, Operation.INSERT))))
        db.terminate_walsender(config.replication_slot)
        wait_for(lambda: client.stats()["reconnects"] == 1 and client.stats()["state"] == "streaming",
                 what="the reconnect")
        assert row_filter(db, config, Operation.INSERT, table) == "(n = 1)"
        execute(db, "INSERT INTO {} (n) VALUES (2), (1)", table)
        assert [e.new["n"] for e in recorder.wait(1)] == [1]


def test_a_durable_slot_resumed_without_server_filters_loses_its_filters(make_table, db, unique, needs_filters):
    table = make_table("id serial PRIMARY KEY, n int")
    config = DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", durable=True,
                          server_filters=True)
    try:
        for server_filters, expected in ((True, "(n = 1)"), (False, None)):
            client = Client(database_cnx=db.dsn, driver=Driver(attr.evolve(config, server_filters=server_filters)))
            client.on(table, Operation.INSERT, conditions=[Condition("n", 1)])(lambda event: None)
            with client:
                assert row_filter(db, config, Operation.INSERT, table) == expected
    finally:
        Driver(config).drop(db.dsn)
