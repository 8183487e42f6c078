"""start() refuses an unusable server with a ConfigurationError that says what to do,
and a failed start leaves nothing behind."""

import os
import socket
import threading
import time

import psycopg2
import pytest
from psycopg2 import sql

from flash_wal import Client, ConfigurationError, FlashError, Listener, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig, catalog
from flash_wal.errors import SlotInUseError

from tests.support.database import Database
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for

needs_own_server = pytest.mark.skipif(
    bool(os.environ.get("FLASH_WAL_TEST_DSN")), reason="needs a server the tests start themselves"
)


def driver_for(name):
    return Driver(DriverConfig(publication_slot_prefix=f"pub_{name}", replication_slot=name, slot_wait_timeout=0.5))


def assert_nothing_left(db, name):
    assert db.slots(name) == []
    assert db.publications(f"pub_{name}") == []


@pytest.fixture(scope="module")
def small_server(pg_server):
    """A second server with one replication slot and one WAL sender."""
    if pg_server is None:
        pytest.skip("needs a server the tests start themselves")
    from flash_wal.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(
        pg_server.bin_dir, settings={"max_replication_slots": "1", "max_wal_senders": "1"}
    )
    server.start()
    yield server
    server.stop()


def test_missing_table(make_client, db, unique):
    client = make_client(slot=f"flash_{unique}")
    client.on(f"no_such_table_{unique}")(lambda event: None)
    with pytest.raises(ConfigurationError, match="does not exist"):
        client.start()
    assert_nothing_left(db, f"flash_{unique}")


def test_missing_column_in_fields_or_conditions(make_client, make_table, db, unique):
    table = make_table()
    client = make_client(slot=f"flash_{unique}")
    client.attach(Listener(table=table, fields=["id", "nope"]))
    with pytest.raises(ConfigurationError, match="no column 'nope'"):
        client.start()
    assert_nothing_left(db, f"flash_{unique}")


def test_missing_table_attached_after_start(make_client, make_table, db):
    table = make_table()
    client = make_client()
    client.on(table)(lambda event: None)
    with client:
        with pytest.raises(ConfigurationError, match="does not exist"):
            client.attach(Listener(table="public.missing_after_start"))
        assert len(client.listeners) == 1


def test_mixed_case_name_needs_quotes_and_says_so(make_client, make_table, db, unique):
    make_table(name=f"Mixed_{unique}")
    client = make_client()
    client.on(f"Mixed_{unique}")(lambda event: None)  # unquoted: folded to lower case
    with pytest.raises(ConfigurationError, match="double|quote|\"MyTable\""):
        client.start()


def test_slot_in_use_by_another_running_instance(make_client, make_table, db, unique):
    table = make_table()
    name = f"flash_{unique}"
    first = make_client(driver=driver_for(name))
    first.on(table)(lambda event: None)
    first.start()
    second = Client(database_cnx=db.dsn, driver=driver_for(name))
    second.on(table)(lambda event: None)
    with pytest.raises(SlotInUseError, match="in use by another running instance"):
        second.start()
    # the failed start removed nothing of the running instance
    assert db.slots(name) == [(name, True)]
    assert db.publications(f"pub_{name}") != []


def test_clients_starting_at_once_with_one_slot(make_table, db, unique, dsn):
    """Web workers booting together: one streams, the others get SlotInUseError, and
    their failed starts leave the winner's publication alone."""
    table = make_table()
    name = f"flash_{unique}"
    barrier = threading.Barrier(4)
    winners, losers = [], []

    def start() -> None:
        client = Client(database_cnx=dsn, driver=driver_for(name))
        recorder = Recorder()
        client.on(table, Operation.INSERT)(recorder)
        barrier.wait()
        try:
            client.start()
        except SlotInUseError as exc:
            losers.append(exc)
        else:
            winners.append((client, recorder))

    threads = [threading.Thread(target=start) for _ in range(barrier.parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(winners) == 1 and len(losers) == 3, (winners, losers)
    client, recorder = winners[0]
    try:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('after the race')").format(sql.Identifier(table)))
        assert recorder.wait(1)[0].new["title"] == "after the race"
    finally:
        client.close()
    assert_nothing_left(db, name)


def test_slot_of_an_instance_still_starting_is_in_use(make_table, db, unique):
    table = make_table()
    name = f"flash_{unique}"
    # What a client holds from the beginning of start(), before its slot exists.
    db.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (catalog.SLOT_LOCK, name))
    client = Client(database_cnx=db.dsn, driver=driver_for(name))
    client.on(table)(lambda event: None)
    with pytest.raises(SlotInUseError, match="starting or reconnecting"):
        client.start()
    assert_nothing_left(db, name)
    db.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (catalog.SLOT_LOCK, name))
    # Once the other instance has gone, the slot is free.
    retry = Client(database_cnx=db.dsn, driver=driver_for(name))
    retry.on(table)(lambda event: None)
    with retry:
        assert db.slots(name) == [(name, True)]
    assert_nothing_left(db, name)


def test_role_without_replication(make_client, make_table, db, unique):
    role = f"{unique}_norepl"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        dsn = psycopg2.extensions.make_dsn(db.dsn, user=role)
        client = Client(database_cnx=dsn, driver=driver_for(f"flash_{unique}"))
        client.on("public.anything")(lambda event: None)
        with pytest.raises(ConfigurationError, match="REPLICATION"):
            client.start()
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert_nothing_left(db, f"flash_{unique}")


def test_replication_role_that_does_not_own_the_table(make_client, make_table, db, unique):
    table = make_table()
    role = f"{unique}_notowner"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION").format(sql.Identifier(role)))
    try:
        dsn = psycopg2.extensions.make_dsn(db.dsn, user=role)
        client = Client(database_cnx=dsn, driver=driver_for(f"flash_{unique}"))
        client.on(table)(lambda event: None)
        with pytest.raises(ConfigurationError, match="own"):
            client.start()
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert_nothing_left(db, f"flash_{unique}")


def test_unreachable_server_fails_within_seconds():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens on it once closed
    client = Client(database_cnx=f"postgresql://postgres@127.0.0.1:{port}/postgres")
    started = time.monotonic()
    with pytest.raises(FlashError, match="cannot connect") as info:
        client.start()
    assert time.monotonic() - started < 5
    assert isinstance(info.value.__cause__, psycopg2.OperationalError)


def test_password_is_masked_in_errors():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Client(database_cnx=f"postgresql://postgres:s3cret@127.0.0.1:{port}/postgres")
    with pytest.raises(FlashError) as info:
        client.start()
    assert "s3cret" not in str(info.value)


def test_no_free_replication_slot(small_server, unique):
    small = Database(small_server.dsn)
    try:
        small.execute("SELECT pg_create_physical_replication_slot(%s)", (f"hog_{unique}",))
        small.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)")
        client = Client(database_cnx=small_server.dsn, driver=driver_for(f"flash_{unique}"))
        client.on("t")(lambda event: None)
        with pytest.raises(ConfigurationError, match="max_replication_slots"):
            client.start()
        assert_nothing_left(small, f"flash_{unique}")
    finally:
        small.execute("SELECT pg_drop_replication_slot(%s)", (f"hog_{unique}",))
        small.close()


def test_no_free_wal_sender(small_server, unique):
    small = Database(small_server.dsn)
    small.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)")
    hog = psycopg2.connect(small_server.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        client = Client(database_cnx=small_server.dsn, driver=driver_for(f"flash_{unique}"))
        client.on("t")(lambda event: None)
        with pytest.raises(ConfigurationError, match="max_wal_senders"):
            client.start()
        assert_nothing_left(small, f"flash_{unique}")
    finally:
        hog.close()
        small.close()


def test_wal_level_not_logical(small_server, unique):
    small = Database(small_server.dsn)
    small.execute("ALTER SYSTEM SET wal_level = replica")
    small.close()
    small_server.restart()
    try:
        client = Client(database_cnx=small_server.dsn, driver=driver_for(f"flash_{unique}"))
        with pytest.raises(ConfigurationError, match="wal_level"):
            client.start()
    finally:
        small = Database(small_server.dsn)
        small.execute("ALTER SYSTEM RESET wal_level")
        small.close()
        small_server.restart()


def test_bad_names_are_rejected_when_configured():
    for bad in ["Has-Dash", "UPPER", "", "x" * 64, 'q"uote', "semi;colon"]:
        with pytest.raises(ConfigurationError):
            DriverConfig(replication_slot=bad)
        with pytest.raises(ConfigurationError):
            DriverConfig(publication_slot_prefix=bad)
    with pytest.raises(ConfigurationError, match="shorten"):
        DriverConfig(publication_slot_prefix="p" * 40, replication_slot="s" * 40)



def test_open_transaction_blocking_slot_creation_fails_within_setup_timeout(make_table, db, unique):
    table, other = make_table(), make_table()
    blocker = Database(db.dsn)
    blocker.conn.autocommit = False
    blocker.execute(sql.SQL("INSERT INTO {} (title) VALUES ('open')").format(sql.Identifier(other)))
    try:
        name = f"flash_{unique}"
        client = Client(database_cnx=db.dsn, driver=Driver(DriverConfig(
            publication_slot_prefix=f"pub_{name}", replication_slot=name, setup_timeout=1)))
        client.on(table)(lambda event: None)
        started = time.monotonic()
        with pytest.raises(ConfigurationError, match="setup_timeout"):
            client.start()
        assert time.monotonic() - started < 10
    finally:
        blocker.conn.rollback()
        blocker.close()
    wait_for(lambda: db.slots(name) == [], what="the cancelled slot to go")
    assert_nothing_left(db, name)


def test_lock_on_listened_table_fails_within_setup_timeout(make_table, db, unique):
    table = make_table()
    blocker = Database(db.dsn)
    blocker.conn.autocommit = False
    blocker.execute(sql.SQL("INSERT INTO {} (title) VALUES ('open')").format(sql.Identifier(table)))
    try:
        name = f"flash_{unique}"
        client = Client(database_cnx=db.dsn, driver=Driver(DriverConfig(
            publication_slot_prefix=f"pub_{name}", replication_slot=name, setup_timeout=0.5)))
        client.on(table)(lambda event: None)
        with pytest.raises(ConfigurationError, match="locked by another transaction"):
            client.start()
    finally:
        blocker.conn.rollback()
        blocker.close()
    assert_nothing_left(db, name)


def test_membership_in_rds_replication_counts_as_replication(db, make_table, unique):
    """On Amazon RDS replication comes from the rds_replication role, not the attribute."""
    table = make_table()
    role = f"{unique}_rds"
    created_rds_role = db.fetchone("SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication')")[0]
    if created_rds_role:
        db.execute("CREATE ROLE rds_replication")
    db.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE rds_replication").format(sql.Identifier(role)))
    try:
        client = Client(database_cnx=psycopg2.extensions.make_dsn(db.dsn, user=role), driver=driver_for(f"flash_{unique}"))
        client.on(table)(lambda event: None)
        with pytest.raises(FlashError) as info:
            client.start()  # this server is no RDS: it refuses later, not in the preflight
        assert "ALTER ROLE" not in str(info.value)
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        if created_rds_role:
            db.execute("DROP ROLE rds_replication")
