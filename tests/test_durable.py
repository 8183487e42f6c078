"""durable=True: a persistent slot and publication; a restarted client resumes."""

import pytest
from psycopg2 import sql

from flash_wal import Client, ConfigurationError, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from .conftest import Recorder


def durable_driver(unique, **options):
    return Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}",
                               durable=True, **options))


@pytest.fixture
def dropped_after(db, unique):
    yield
    durable_driver(unique).drop(db.dsn)
    assert db.slots(f"flash_{unique}") == []
    assert db.publications(f"pub_{unique}") == []


def test_restarted_client_resumes_where_the_last_one_stopped(make_table, db, unique, dropped_after):
    table = make_table()
    t = sql.Identifier(table)
    first = Recorder()
    client = Client(database_cnx=db.dsn, driver=durable_driver(unique))
    client.on(table, Operation.INSERT)(first)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('seen by the first')").format(t))
        first.wait(1)
    assert db.slots(f"flash_{unique}") == [(f"flash_{unique}", False)]  # kept, inactive
    assert db.publications(f"pub_{unique}") != []

    db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('while nobody listened')").format(t))
    db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('also while down')").format(t))

    second = Recorder()
    client = Client(database_cnx=db.dsn, driver=durable_driver(unique))
    client.on(table, Operation.INSERT)(second)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('after the restart')").format(t))
        events = second.wait(3)
    assert [e.new["title"] for e in events] == ["while nobody listened", "also while down", "after the restart"]


def test_existing_slot_of_another_kind_is_refused(make_table, db, unique, dropped_after):
    table = make_table()
    db.execute("SELECT pg_create_physical_replication_slot(%s)", (f"flash_{unique}",))
    client = Client(database_cnx=db.dsn, driver=durable_driver(unique))
    client.on(table)(lambda event: None)
    with pytest.raises(ConfigurationError, match="not a pgoutput slot"):
        client.start()
    assert db.slots(f"flash_{unique}") == [(f"flash_{unique}", False)]  # not ours to drop


def test_drop_refuses_a_slot_in_use(make_table, db, unique, dropped_after):
    table = make_table()
    client = Client(database_cnx=db.dsn, driver=durable_driver(unique))
    client.on(table)(lambda event: None)
    with client:
        with pytest.raises(ConfigurationError, match="in use"):
            durable_driver(unique, slot_wait_timeout=0.2).drop(db.dsn)


def test_transaction_not_acknowledged_at_close_is_delivered_again(make_table, db, unique, dropped_after):
    import threading

    table = make_table()
    t = sql.Identifier(table)
    started, release = threading.Event(), threading.Event()

    def stuck(event):
        started.set()
        release.wait(30)

    client = Client(database_cnx=db.dsn, shutdown_timeout=0.2, driver=durable_driver(unique))
    client.on(table, Operation.INSERT)(stuck)
    client.start()
    db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('unfinished')").format(t))
    assert started.wait(10)
    client.close()  # gives up on the stuck callback: the transaction stays unacknowledged
    release.set()

    again = Recorder()
    client = Client(database_cnx=db.dsn, driver=durable_driver(unique))
    client.on(table, Operation.INSERT)(again)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('next')").format(t))
        events = again.wait(2)
    assert [e.new["title"] for e in events] == ["unfinished", "next"]


def test_walsender_killed_mid_stream_loses_nothing(make_table, db, unique, dropped_after):
    import threading

    from .conftest import Database, wait_for

    table = make_table()
    seen = set()
    lock = threading.Lock()

    def remember(event):
        with lock:
            seen.add(event.new["id"])

    client = Client(database_cnx=db.dsn, driver=durable_driver(unique, reconnect_delay=0.05))
    client.on(table, Operation.INSERT)(remember)
    writer = Database(db.dsn)
    with client:
        for batch in range(20):
            writer.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 50)").format(
                sql.Identifier(table)))
            if batch in (5, 12):
                pid = db.fetchone("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                  (f"flash_{unique}",))[0]
                if pid is not None:
                    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: len(seen) == 1000, timeout=30, what="all 1000 rows")
        assert client.stats()["reconnects"] >= 1
    writer.close()
    assert seen == set(range(1, 1001))


def test_server_restart_mid_stream_loses_nothing(pg_server, dsn, unique):
    import threading

    from .conftest import Database, wait_for

    if pg_server is None:
        pytest.skip("needs a server the tests start themselves")
    table = f"restart_{unique}"
    setup = Database(dsn)
    setup.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, title text)").format(sql.Identifier(table)))
    setup.close()
    seen = set()
    lock = threading.Lock()

    def remember(event):
        with lock:
            seen.add(event.new["id"])

    driver = durable_driver(unique, reconnect_delay=0.1)
    client = Client(database_cnx=dsn, driver=driver)
    client.on(table, Operation.INSERT)(remember)
    insert = sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, 100)").format(sql.Identifier(table))
    try:
        with client:
            writer = Database(dsn)
            writer.execute(insert)
            writer.close()
            pg_server.restart()
            writer = Database(dsn)
            writer.execute(insert)
            writer.close()
            wait_for(lambda: len(seen) == 200, timeout=60, what="all 200 rows")
            assert client.stats()["reconnects"] >= 1
    finally:
        cleanup = Database(dsn)
        cleanup.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        cleanup.close()
        driver.drop(dsn)
    assert seen == set(range(1, 201))
