"""durable=True: a persistent slot and publication; a restarted client resumes."""

import pytest
from psycopg2 import sql

from flash_wal import Client, ConfigurationError, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.recorder import Recorder


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
    with pytest.raises(ConfigurationError, match="physical slot"):
        durable_driver(unique).drop(db.dsn)  # nor Driver.drop's
    db.execute("SELECT pg_drop_replication_slot(%s)", (f"flash_{unique}",))


def test_drop_refuses_a_slot_in_use(make_table, db, unique, dropped_after):
    table = make_table()
    client = Client(database_cnx=db.dsn, driver=durable_driver(unique))
    client.on(table)(lambda event: None)
    with client:
        with pytest.raises(ConfigurationError, match="in use"):
            durable_driver(unique, slot_wait_timeout=0.2).drop(db.dsn)


def test_transaction_not_acknowledged_at_close_is_delivered_again(make_table, db, unique, dropped_after, caplog):
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
    assert any("the next start delivers them again" in r.getMessage() for r in caplog.records)

    again = Recorder()
    client = Client(database_cnx=db.dsn, driver=durable_driver(unique))
    client.on(table, Operation.INSERT)(again)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('next')").format(t))
        events = again.wait(2)
    assert [e.new["title"] for e in events] == ["unfinished", "next"]
