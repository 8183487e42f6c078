"""The server publishes only the operations some listener can get an event from."""

import json
import threading

import pytest
from psycopg2 import sql

from flash_wal import Client, Condition, Listener, Operation
from flash_wal.cli import main
from flash_wal.drivers.wal_logical import Driver, DriverConfig
from flash_wal.drivers.wal_logical.ownership import PublicationOwner
from flash_wal.drivers.wal_logical.publications import stale_after_alter

from tests.support.database import Database
from tests.support.publications import published_operations, publications_exist
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def execute(db, statement, table, *args):
    db.execute(sql.SQL(statement).format(sql.Identifier(table)), args or None)


def received(client):
    stats = client.stats()
    return stats["bytes_received"], stats["frames_received"]


def publication_oids(db, config):
    return dict(db.fetchall("SELECT pubname::text, oid::int8 FROM pg_publication WHERE pubname = ANY(%s)",
                            (list(config.publication_names),)))


def client_recording(make_client, table, operations):
    recorder = Recorder()
    client = make_client()
    client.on(table, operations)(recorder)
    return client, recorder


def test_an_update_listener_receives_no_insert(make_client, make_table, db):
    table = make_table()
    client, recorder = client_recording(make_client, table, Operation.UPDATE)
    with client:
        assert published_operations(db, client.driver.config, table) == {"update"}
        before = received(client)
        execute(db, "INSERT INTO {} (title) SELECT repeat('x', 1000) FROM generate_series(1, 200)", table)
        execute(db, "UPDATE {} SET status = 'seen' WHERE id = 1", table)
        assert recorder.wait(1)[0].new["status"] == "seen"
        after = received(client)
    # 200 kB were inserted; what came is the update (with its relation) and keepalives.
    assert after[0] - before[0] < 20_000, (before, after)
    assert after[1] - before[1] <= 6, (before, after)  # begin, relation, (type), update, commit


def test_insert_and_delete_listeners_need_updates_for_key_changes_and_transitions(make_client, make_table, db):
    keyed, plain, filtered = make_table(), make_table("id int, title text"), make_table("id int, title text")
    client = make_client()
    client.on(keyed, Operation.INSERT)(lambda event: None)
    client.on(plain, "insert,delete")(lambda event: None)
    client.on(filtered, Operation.DELETE, conditions=[Condition("title", "a")])(lambda event: None)
    client.on(plain, Operation.TRUNCATE)(lambda event: None)
    with client:
        config = client.driver.config
        assert published_operations(db, config, keyed) == {"insert", "update"}  # key changes
        # No key today, but a schema change may give it one: its key changes come as UPDATEs.
        assert published_operations(db, config, plain) == {"insert", "delete", "update", "truncate"}
        assert published_operations(db, config, filtered) == {"delete", "update"}  # transitions


def test_attach_and_detach_move_a_table_without_losing_another_listeners_events(make_client, make_table, db,
                                                                              server_version):
    if stale_after_alter(server_version):
        pytest.skip("this server may decode changes after ALTER PUBLICATION with the publication as it was")
    table = make_table()
    execute(db, "INSERT INTO {} (title) SELECT 'row' FROM generate_series(1, 15)", table)
    updates, deletes = Recorder(), Recorder()
    client = make_client()
    client.on(table, Operation.UPDATE)(updates)
    count, stop = [0], threading.Event()

    def write():
        while not stop.is_set() and count[0] < 2000:
            count[0] += 1
            execute(db_writer, "UPDATE {} SET status = %s WHERE id = %s", table, str(count[0]), count[0] % 10 + 1)

    db_writer = Database(db.dsn)
    with client:
        config = client.driver.config
        writer = threading.Thread(target=write)
        writer.start()
        try:
            for round_ in range(5):
                listener = Listener(table=table)
                listener.on(Operation.DELETE, deletes)
                client.attach(listener)
                assert published_operations(db, config, table) == {"update", "delete"}
                execute(db, "DELETE FROM {} WHERE id = %s", table, 11 + round_)
                assert deletes.wait(round_ + 1)[-1].old["id"] == 11 + round_
                client.detach(listener)
                assert published_operations(db, config, table) == {"update"}
        finally:
            stop.set()
            writer.join()
            db_writer.close()
        total = count[0]
        events = updates.wait(total)
    assert [int(e.new["status"]) for e in events] == list(range(1, total + 1))


def test_callbacks_registered_and_removed_on_an_attached_listener_change_what_is_published(
        make_client, make_table, db):
    table = make_table("id int, title text")
    updates, inserts = Recorder(), Recorder()
    listener = Listener(table=table)
    listener.on(Operation.UPDATE, updates)
    client = make_client()
    client.attach(listener)
    with client:
        config = client.driver.config
        execute(db, "INSERT INTO {} VALUES (1, 'not published')", table)
        listener.on(Operation.INSERT, inserts)
        assert published_operations(db, config, table) == {"insert", "update"}
        execute(db, "INSERT INTO {} VALUES (2, 'published')", table)
        assert [e.new["title"] for e in inserts.wait(1)] == ["published"]
        listener.off(inserts)
        assert published_operations(db, config, table) == {"update"}
        execute(db, "UPDATE {} SET title = 'updated'", table)
        assert len(updates.wait(2)) == 2
    assert [e.new["title"] for e in inserts.events] == ["published"]


def test_a_resumed_durable_slot_alters_its_publications_and_status_and_drop_find_them_all(
        make_table, db, unique, capsys):
    table = make_table()
    config = DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", durable=True)
    first = Client(database_cnx=db.dsn, driver=Driver(config))
    first.on(table, Operation.UPDATE)(lambda event: None)
    try:
        with first:
            pass
        oids = publication_oids(db, config)
        assert len(oids) == 4
        execute(db, "INSERT INTO {} (title) VALUES ('while stopped, not published')", table)
        execute(db, "UPDATE {} SET status = 'while stopped'", table)
        recorder = Recorder()
        second = Client(database_cnx=db.dsn, driver=Driver(config))
        second.on(table, Operation.INSERT | Operation.UPDATE)(recorder)
        with second:
            execute(db, "INSERT INTO {} (title) VALUES ('after')", table)
            events = recorder.wait(2)
            assert published_operations(db, config, table) == {"insert", "update"}
        # Decoded with the publications as they were when written: the first insert was not published.
        assert [(type(e).__name__, e.new["status"] or e.new["title"]) for e in events] == [
            ("UpdateEvent", "while stopped"), ("InsertEvent", "after")]
        assert publication_oids(db, config) == oids  # altered, never made again
        assert main(["status", "--dsn", db.dsn, "--prefix", config.publication_slot_prefix, "--json"]) == 0
        [report] = json.loads(capsys.readouterr().out)
        assert report["publications"] == sorted(config.publication_names) and report["tables"] == [f"public.{table}"]
    finally:
        Driver(config).drop(db.dsn)
    assert db.publications(config.publication_slot_prefix) == [] and db.slots(config.replication_slot) == []


def test_a_durable_slot_of_the_previous_version_goes_on_with_its_one_publication(make_table, db, unique, caplog):
    table = make_table()
    config = DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", durable=True)
    owner = PublicationOwner(prefix=config.publication_slot_prefix, slot=config.replication_slot, durable=True)
    db.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
        sql.Identifier(config.publication_name), sql.Identifier(table)))
    db.execute(sql.SQL("COMMENT ON PUBLICATION {} IS %s").format(sql.Identifier(config.publication_name)),
               (owner.marker(),))
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (config.replication_slot,))
    execute(db, "INSERT INTO {} (title) VALUES ('while stopped')", table)
    recorder = Recorder()
    client = Client(database_cnx=db.dsn, driver=Driver(config))
    client.on(table, Operation.INSERT)(recorder)
    try:
        with client:
            assert recorder.wait(1)[0].new["title"] == "while stopped"
        assert "made by an earlier version for every operation" in caplog.text
        assert db.publications(config.publication_slot_prefix) == [config.publication_name]
    finally:
        Driver(config).drop(db.dsn)
    assert db.publications(config.publication_slot_prefix) == [] and db.slots(config.replication_slot) == []
    assert publications_exist(db, config) == []


def test_bytes_and_frames_received_grow_with_what_the_server_sends(make_client, make_table, db):
    client, recorder = client_recording(make_client, make_table(), Operation.INSERT)
    table = client.listeners[0].table.name
    with client:
        before = received(client)
        execute(db, "INSERT INTO {} (title) VALUES (repeat('x', 5000))", table)
        recorder.wait(1)
        wait_for(lambda: received(client)[1] >= before[1] + 3, what="begin, insert and commit counted")
        assert received(client)[0] - before[0] > 5000


def test_a_server_that_may_decode_with_a_stale_publication_is_named_at_the_first_change_of_listeners(
    make_client, make_table, server_version, caplog,
):
    # Said when it matters, once: not at start (most clients never change their
    # listeners), at the first attach while streaming.
    client = make_client()
    client.on(make_table(), Operation.INSERT)(lambda event: None)
    with client:
        assert "ALTER PUBLICATION" not in caplog.text
        client.on(make_table(), Operation.DELETE)(lambda event: None)
        client.on(make_table(), Operation.DELETE)(lambda event: None)
    warnings = [r for r in caplog.records if "ALTER PUBLICATION" in r.getMessage()]
    assert len(warnings) == (1 if stale_after_alter(server_version) else 0)
