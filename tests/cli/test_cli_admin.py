"""``flash-wal status`` and ``flash-wal cleanup`` against the real server."""

import json
import os
import subprocess
import sys

from psycopg2 import sql

from flash_wal import Client, Operation
from flash_wal.cli import main
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.processes import ConsumerProcess, ROOT
from tests.support.recorder import Recorder
from tests.support.waiting import wait_for


def durable_client(db, unique, table):
    client = Client(database_cnx=db.dsn, driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", durable=True)))
    recorder = Recorder()
    client.on(table, Operation.INSERT)(recorder)
    return client, recorder


def left_durable_slot(db, unique, table):
    """Run a durable client once, then write a row it has not seen: the slot lags."""
    client, recorder = durable_client(db, unique, table)
    with client:
        db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('seen')").format(sql.Identifier(table)))
        recorder.wait(1)
    db.execute(sql.SQL("INSERT INTO {} (title) VALUES ('waiting')").format(sql.Identifier(table)))


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "flash_wal", *args], cwd=ROOT, stdin=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)


def test_status_shows_active_and_inactive_slots_with_lag(db, make_table, make_client, unique, capsys):
    table = make_table()
    left_durable_slot(db, unique, table)
    running = make_client(driver=Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}",
                                                     replication_slot=f"flash_{unique}_live")))
    running.on(table)(lambda event: None)
    try:
        with running:
            assert main(["status", "--dsn", db.dsn, "--prefix", f"pub_{unique}", "--json"]) == 0
            reports = {r["slot"]: r for r in json.loads(capsys.readouterr().out)}
            assert main(["status", "--dsn", db.dsn, "--prefix", f"pub_{unique}"]) == 0
            table_out = capsys.readouterr().out
    finally:
        Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}")).drop(db.dsn)

    durable, live = reports[f"flash_{unique}"], reports[f"flash_{unique}_live"]
    assert (durable["temporary"], durable["active_pid"]) == (False, None)
    assert durable["lag_bytes"] > 0  # the row written after it stopped
    assert durable["tables"] == [f"public.{table}"]
    assert live["temporary"] is True and live["active_pid"] is not None
    lines = table_out.splitlines()
    assert lines[0].split() == ["SLOT", "KIND", "STATE", "LAG", "PUBLICATION", "TABLES"]
    assert any(line.startswith(f"flash_{unique} ") and " durable " in line and " inactive " in line for line in lines)
    assert any(line.startswith(f"flash_{unique}_live ") and "active (pid" in line for line in lines)


def test_status_of_an_unknown_prefix(db, unique, capsys):
    assert main(["status", "--dsn", db.dsn, "--prefix", f"none_{unique}"]) == 0
    assert "no replication slot or publication" in capsys.readouterr().out


def test_cleanup_asks_before_dropping_a_durable_slot(db, make_table, unique):
    table = make_table()
    left_durable_slot(db, unique, table)
    names = ["--dsn", db.dsn, "--prefix", f"pub_{unique}", "--slot", f"flash_{unique}"]

    refused = run_cli("cleanup", *names, stdin=subprocess.DEVNULL)  # no terminal to ask on
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert db.slots(f"flash_{unique}") != []

    # Asked on a terminal: "n" keeps it, "y" drops it.
    for answer, code in (("n", 1), ("y", 0)):
        leader, follower = os.openpty()
        try:
            os.write(leader, f"{answer}\n".encode())
            answered = run_cli("cleanup", *names, stdin=follower)
        finally:
            os.close(leader)
            os.close(follower)
        assert answered.returncode == code, answered.stderr
        assert (db.slots(f"flash_{unique}") == []) == (answer == "y")
    assert "dropped replication slot" in answered.stdout
    assert db.publications(f"pub_{unique}") == []


def test_cleanup_yes_drops_without_asking_and_then_finds_nothing(db, make_table, unique, capsys):
    table = make_table()
    left_durable_slot(db, unique, table)
    names = ["--dsn", db.dsn, "--prefix", f"pub_{unique}", "--slot", f"flash_{unique}"]
    assert main(["cleanup", *names, "--yes"]) == 0
    assert db.slots(f"flash_{unique}") == [] and db.publications(f"pub_{unique}") == []
    assert main(["cleanup", *names]) == 0
    assert "nothing to clean up" in capsys.readouterr().out


def test_cleanup_refuses_a_slot_in_use(db, make_table, unique, capsys):
    table = make_table()
    client, _ = durable_client(db, unique, table)
    try:
        with client:
            code = main(["cleanup", "--dsn", db.dsn, "--prefix", f"pub_{unique}", "--slot", f"flash_{unique}",
                         "--yes"])
            assert code == 1
            assert "in use" in capsys.readouterr().err
            assert db.slots(f"flash_{unique}") != []
    finally:
        Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}")).drop(db.dsn)


def test_cleanup_drops_the_publication_a_killed_temporary_client_left(db, make_table, unique, capsys):
    table = make_table()
    killed = ConsumerProcess(db.dsn, table, f"flash_{unique}", f"pub_{unique}")
    try:
        killed.wait_line("streaming")
    finally:
        killed.kill()
    names = sorted(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}")
                   .publication_names)
    assert db.publications(f"pub_{unique}") == names
    wait_for(lambda: db.slots(f"flash_{unique}") == [], what="the temporary slot to go with its walsender")
    assert main(["cleanup", "--dsn", db.dsn, "--prefix", f"pub_{unique}", "--slot", f"flash_{unique}"]) == 0
    out = capsys.readouterr().out
    assert f"dropped publications {', '.join(map(repr, names))}" in out
    assert db.publications(f"pub_{unique}") == []


def test_cleanup_drops_a_publication_with_the_name_of_an_older_version(db, make_table, unique, capsys):
    table = make_table()
    db.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
        sql.Identifier(f"pub_{unique}_flash_{unique}"), sql.Identifier(table)))
    assert main(["cleanup", "--dsn", db.dsn, "--prefix", f"pub_{unique}", "--slot", f"flash_{unique}"]) == 0
    assert f"dropped publication 'pub_{unique}_flash_{unique}'" in capsys.readouterr().out
    assert db.publications(f"pub_{unique}") == []


def test_status_and_cleanup_never_take_a_longer_prefixs_objects(db, make_table, unique, capsys):
    """Prefix p_x with slot s: once the publication p_x_s, which prefix p read as slot x_s's."""
    table = make_table()
    longer = Driver(DriverConfig(publication_slot_prefix=f"p{unique}_x", replication_slot=f"s{unique}", durable=True))
    client = Client(database_cnx=db.dsn, driver=longer)
    client.on(table)(lambda event: None)
    with client:
        pass
    try:
        assert main(["status", "--dsn", db.dsn, "--prefix", f"p{unique}", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []
        assert main(["status", "--dsn", db.dsn, "--prefix", f"p{unique}_x", "--json"]) == 0
        assert [r["slot"] for r in json.loads(capsys.readouterr().out)] == [f"s{unique}"]
        assert main(["cleanup", "--dsn", db.dsn, "--prefix", f"p{unique}", "--slot", f"x_s{unique}", "--yes"]) == 0
        assert "nothing to clean up" in capsys.readouterr().out
        assert db.publications(f"p{unique}_x") == sorted(longer.config.publication_names)
    finally:
        longer.drop(db.dsn)


def test_cleanup_of_a_slot_that_is_not_there_while_the_prefix_has_another(db, make_table, unique, capsys):
    table = make_table()
    left_durable_slot(db, unique, table)
    try:
        assert main(["cleanup", "--dsn", db.dsn, "--prefix", f"pub_{unique}", "--slot", f"other_{unique}"]) == 0
        assert "nothing to clean up" in capsys.readouterr().out
        assert db.slots(f"flash_{unique}") != []
    finally:
        Driver(DriverConfig(publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}")).drop(db.dsn)


def test_cleanup_leaves_a_slot_flash_wal_does_not_make(db, unique, capsys):
    db.execute("SELECT pg_create_physical_replication_slot(%s)", (f"flash_{unique}",))
    try:
        code = main(["cleanup", "--dsn", db.dsn, "--prefix", f"pub_{unique}", "--slot", f"flash_{unique}", "--yes"])
        assert code == 1
        assert "physical slot" in capsys.readouterr().err
        assert db.slots(f"flash_{unique}") == [(f"flash_{unique}", False)]
    finally:
        db.execute("SELECT pg_drop_replication_slot(%s)", (f"flash_{unique}",))


def test_status_lists_the_durable_slot_of_an_older_version(db, make_table, unique, capsys):
    table = make_table()
    old_name = f"pub_{unique}_flash_{unique}"
    db.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(old_name), sql.Identifier(table)))
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"flash_{unique}",))
    try:
        assert main(["status", "--dsn", db.dsn, "--prefix", f"pub_{unique}"]) == 0
        line, = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"flash_{unique} ")]
        assert f"{old_name} (old name)" in line and " durable " in line
    finally:
        assert main(["cleanup", "--dsn", db.dsn, "--prefix", f"pub_{unique}", "--slot", f"flash_{unique}", "--yes"]) == 0
    assert db.slots(f"flash_{unique}") == [] and db.publications(f"pub_{unique}") == []
