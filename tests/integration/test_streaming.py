"""use_streaming=True: large transactions arrive in chunks while in progress and are
delivered only once committed; memory stays bounded; temporary files go away."""

import hashlib
import os

import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import Client, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.database import Database
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for

ROWS = 5000


@pytest.fixture(autouse=True)
def needs_streaming(server_version):
    if server_version < 140000:
        pytest.skip("streaming of in-progress transactions needs PostgreSQL 14")


def streaming_client(db, unique, buffer_bytes=32 * 1024, **options):
    # A tiny logical_decoding_work_mem makes the server stream after a few rows.
    dsn = psycopg2.extensions.make_dsn(db.dsn, options="-c logical_decoding_work_mem=64kB")
    slot = f"flash_{unique}"
    return Client(database_cnx=dsn, shutdown_timeout=5, driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{slot}", replication_slot=slot, use_streaming=True,
        stream_buffer_bytes=buffer_bytes,
    )), **options)


def _deleted_open_files():
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            found.add((fd, target))
    return found


@pytest.fixture(autouse=True)
def _baseline_files():
    """Deleted files this process already had open (pytest's capture files, say)."""
    global _BASELINE
    _BASELINE = _deleted_open_files()
    yield


_BASELINE = set()


def temporary_files():
    """Anonymous temporary files opened since the test began: held transactions."""
    return sorted(_deleted_open_files() - _BASELINE)


def test_large_transaction_is_delivered_whole_and_in_order_after_commit(make_table, db, unique):
    table = make_table()
    recorder = Recorder()
    client = streaming_client(db, unique)
    client.on(table, Operation.INSERT | Operation.UPDATE)(recorder)
    writer = Database(db.dsn)
    writer.conn.autocommit = False
    try:
        with client:
            writer.execute(sql.SQL("INSERT INTO {} (title) SELECT 'row ' || i FROM generate_series(1, %s) i").format(
                sql.Identifier(table)), (ROWS,))
            # the server streams it now, while it is still open: nothing may be delivered
            writer.execute(sql.SQL("INSERT INTO {} (title) VALUES ('marker')").format(sql.Identifier(table)))
            wait_for(temporary_files, what="the held transaction to spill to a temporary file")
            assert len(recorder) == 0
            writer.conn.commit()
            events = recorder.wait(ROWS + 1)
            assert [e.new["id"] for e in events] == list(range(1, ROWS + 2))
            assert len({(e.xid, e.commit_lsn) for e in events}) == 1
            wait_for(lambda: not temporary_files(), what="the temporary file to be removed")
    finally:
        writer.close()
    assert temporary_files() == []


def test_a_value_of_megabytes_in_a_spilled_transaction_arrives_intact(make_table, db, unique):
    table = make_table()
    recorder = Recorder()
    client = streaming_client(db, unique, buffer_bytes=64 * 1024)
    client.on(table, Operation.INSERT)(recorder)
    writer = Database(db.dsn)
    writer.conn.autocommit = False
    insert = sql.SQL("INSERT INTO {} (title) VALUES (%s)").format(sql.Identifier(table))
    # md5 text does not compress: the row's frame is as large as the value.
    big = "".join(hashlib.md5(str(i).encode()).hexdigest() for i in range(150_000))  # 4.8 MB
    try:
        with client:
            writer.execute(sql.SQL("INSERT INTO {} (title) SELECT 'row ' || i FROM generate_series(1, %s) i").format(
                sql.Identifier(table)), (ROWS,))
            writer.execute(insert, (big,))
            writer.execute(insert, ("after",))
            wait_for(temporary_files, what="the held transaction to spill to a temporary file")
            writer.conn.commit()
            events = recorder.wait(ROWS + 2)
    finally:
        writer.close()
    assert events[ROWS].new["title"] == big
    assert [e.new["title"] for e in events[ROWS - 1:ROWS + 2:2]] == [f"row {ROWS}", "after"]


def test_rolled_back_streamed_transaction_delivers_nothing(make_table, db, unique):
    table, sentinel = make_table(), make_table()
    recorder = Recorder()
    client = streaming_client(db, unique)
    client.on(table)(recorder)
    client.on(sentinel)(recorder)
    writer = Database(db.dsn)
    writer.conn.autocommit = False
    try:
        with client:
            writer.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, %s)").format(
                sql.Identifier(table)), (ROWS,))
            wait_for(temporary_files, what="the transaction to be streamed")
            writer.conn.rollback()
            writer.conn.autocommit = True
            writer.execute(sql.SQL("INSERT INTO {} (title) VALUES ('after')").format(sql.Identifier(sentinel)))
            events = recorder.wait(1)
            wait_for(lambda: not temporary_files(), what="the aborted transaction's file to go")
    finally:
        writer.close()
    assert [e.table for e in events] == [f"public.{sentinel}"]


def test_rolled_back_savepoint_drops_only_its_rows(make_table, db, unique):
    table = make_table()
    recorder = Recorder()
    client = streaming_client(db, unique)
    client.on(table, Operation.INSERT)(recorder)
    writer = Database(db.dsn)
    writer.conn.autocommit = False
    insert = sql.SQL("INSERT INTO {} (title) SELECT %s FROM generate_series(1, %s)").format(sql.Identifier(table))
    try:
        with client:
            writer.execute(insert, ("kept", 2000))
            writer.execute("SAVEPOINT a")
            writer.execute(insert, ("dropped", 2000))
            writer.execute("SAVEPOINT b")
            writer.execute(insert, ("dropped too", 100))
            writer.execute("ROLLBACK TO SAVEPOINT a")
            writer.execute("SAVEPOINT c")
            writer.execute(insert, ("kept in savepoint", 1000))
            writer.execute("RELEASE SAVEPOINT c")
            writer.conn.commit()
            events = recorder.wait(3000)
            writer.conn.autocommit = True
            writer.execute(sql.SQL("INSERT INTO {} (title) VALUES ('last')").format(sql.Identifier(table)))
            events = recorder.wait(3001)
    finally:
        writer.close()
    titles = [e.new["title"] for e in events]
    assert titles == ["kept"] * 2000 + ["kept in savepoint"] * 1000 + ["last"]


def test_interleaved_streamed_transactions_are_kept_apart(make_table, db, unique):
    table = make_table()
    recorder = Recorder()
    client = streaming_client(db, unique)
    client.on(table, Operation.INSERT)(recorder)
    first, second = Database(db.dsn), Database(db.dsn)
    for writer in (first, second):
        writer.conn.autocommit = False
    insert = sql.SQL("INSERT INTO {} (title) SELECT %s FROM generate_series(1, 1500)").format(sql.Identifier(table))
    try:
        with client:
            for _ in range(3):
                first.execute(insert, ("first",))
                second.execute(insert, ("second",))
            second.conn.commit()
            first.conn.commit()
            events = recorder.wait(9000)
    finally:
        first.close()
        second.close()
    titles = [e.new["title"] for e in events]
    assert titles == ["second"] * 4500 + ["first"] * 4500
    assert len({e.xid for e in events[:4500]}) == 1 and len({e.xid for e in events[4500:]}) == 1


def test_close_in_the_middle_of_a_streamed_transaction_removes_its_file(make_table, db, unique):
    table = make_table()
    client = streaming_client(db, unique)
    client.on(table)(lambda event: None)
    writer = Database(db.dsn)
    writer.conn.autocommit = False
    try:
        client.start()
        writer.execute(sql.SQL("INSERT INTO {} (title) SELECT 'x' FROM generate_series(1, %s)").format(
            sql.Identifier(table)), (ROWS,))
        wait_for(temporary_files, what="the transaction to spill")
        client.close()
        assert temporary_files() == []
    finally:
        writer.conn.rollback()
        writer.close()
        client.close()
    assert db.slots(f"flash_{unique}") == []


def test_streaming_needs_a_positive_buffer():
    from flash_wal import ConfigurationError

    with pytest.raises(ConfigurationError):
        DriverConfig(use_streaming=True, stream_buffer_bytes=0)
