"""``flash-wal listen`` as a real process: JSON lines out, exit statuses, signals, bad input."""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from typing import List, Optional

import pytest
from psycopg2 import sql

from flash_wal.cli import main
from flash_wal.cli.listen import parse_where

from tests.support.processes import ROOT
from tests.support.waiting import wait_for

LISTEN = [sys.executable, "-m", "flash_wal", "listen"]


class Command:
    """A command line in a process of its own; its stdout lines and stderr kept."""

    def __init__(self, argv: List[str], env: Optional[dict] = None, shell: bool = False) -> None:
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, shell=shell, executable="/bin/bash" if shell else None,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: List[str] = []
        self.stderr = ""
        self._readers = [threading.Thread(target=self._read_lines, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_lines(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def wait_lines(self, count: int, timeout: float = 30) -> List[str]:
        wait_for(lambda: len(self.lines) >= count or self.proc.poll() is not None, timeout, f"{count} lines")
        assert len(self.lines) >= count, (self.lines, self.wait_exit())
        return self.lines[:count]

    def events(self, count: int) -> List[dict]:
        return [json.loads(line) for line in self.wait_lines(count)]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.wait_exit()

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"did not exit; stdout {self.lines}, stderr {self.stderr}") from None
        for reader in self._readers:
            reader.join(10)
        return code


@pytest.fixture
def names(unique):
    """--slot and --prefix of this test's own."""
    return {"slot": f"flash_{unique}", "prefix": f"pub_{unique}"}


@pytest.fixture
def listen(dsn, db, names):
    """Start ``flash-wal listen`` with this test's names; returns once it streams."""
    started: List[Command] = []

    def start(*args: str, via_shell: Optional[str] = None, dsn_option: bool = True) -> Command:
        argv = LISTEN + ["--slot", names["slot"], "--prefix", names["prefix"], *args]
        if dsn_option:
            argv += ["--dsn", dsn]
        env = dict(os.environ, FLASH_WAL_DSN=dsn)
        if via_shell is not None:  # "{listen} | jq ...": the pipeline's own exit status
            command = Command(["set -o pipefail; " + via_shell.replace("{listen}", " ".join(map(quote, argv)))],
                              env=env, shell=True)
        else:
            command = Command(argv, env=env)
        started.append(command)
        wait_for(lambda: command.proc.poll() is not None or db.streams(names["slot"]),
                 what="flash-wal listen to stream")
        assert command.proc.poll() is None, (command.wait_exit(), command.stderr)
        return command

    yield start
    for command in started:
        if command.proc.poll() is None:
            command.stop()
    wait_for(lambda: not db.slots(names["slot"]), what="the temporary slot to go")
    assert db.publications(names["prefix"]) == [], "publication left behind"


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def run_sql(db, query: str, table: str, *params) -> None:
    db.execute(sql.SQL(query).format(sql.Identifier(table)), params or None)


def test_every_operation_comes_out_as_one_json_line(listen, make_table, db):
    table = make_table()
    command = listen("--table", table)
    run_sql(db, "INSERT INTO {} (title, status) VALUES ('a', 'draft'), ('b', NULL)", table)
    run_sql(db, "UPDATE {} SET status = 'published' WHERE title = 'a'", table)
    run_sql(db, "DELETE FROM {} WHERE title = 'b'", table)
    run_sql(db, "TRUNCATE {} RESTART IDENTITY", table)
    first, second, update, delete, truncate = command.events(5)

    assert [e["op"] for e in (first, second, update, delete, truncate)] == [
        "INSERT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"]
    assert {e["table"] for e in (first, update, truncate)} == {f"public.{table}"}
    assert first["new"] == {"id": 1, "title": "a", "status": "draft"}
    assert second["new"] == {"id": 2, "title": "b", "status": None}
    assert first["xid"] == second["xid"] and first["commit_lsn"] == second["commit_lsn"]
    assert first["lsn"] < second["lsn"] < second["commit_lsn"] <= update["commit_lsn"]
    assert update["old"] == {"id": 1, "title": "a", "status": "draft"}
    assert update["new"] == {"id": 1, "title": "a", "status": "published"}
    assert delete["old"] == {"id": 2, "title": "b", "status": None} and "new" not in delete
    assert (truncate["cascade"], truncate["restart_identity"]) == (False, True)
    assert datetime.datetime.fromisoformat(first["commit_time"]).tzinfo is not None

    assert command.stop(signal.SIGTERM) == 0
    assert command.stderr == ""  # quiet unless asked (-v)


def test_where_fields_and_ops_choose_the_rows_and_columns(listen, make_table, db):
    table = make_table("id int PRIMARY KEY, title text, status text, published boolean, deleted_at date")
    command = listen("--table", table, "--ops", "insert,delete", "--fields", "id,title",
                     "--where", "published=true", "--where", "status=live", "--where-null", "deleted_at",
                     "--max-events", "3")
    run_sql(db, "INSERT INTO {} VALUES (1, 'no', 'live', false, NULL), (2, 'yes', 'live', true, NULL),"
                " (3, 'gone', 'live', true, '2025-01-01')", table)
    run_sql(db, "UPDATE {} SET published = true WHERE id = 1", table)   # now matches: an INSERT
    run_sql(db, "UPDATE {} SET title = 'YES' WHERE id = 2", table)      # an UPDATE: not asked for
    run_sql(db, "UPDATE {} SET deleted_at = now() WHERE id = 2", table)  # stops matching: a DELETE
    assert command.wait_exit() == 0  # --max-events 3
    events = [json.loads(line) for line in command.lines]
    assert [(e["op"], e.get("new"), e.get("old")) for e in events] == [
        ("INSERT", {"id": 2, "title": "yes"}, None),
        ("INSERT", {"id": 1, "title": "no"}, None),
        ("DELETE", None, {"id": 2, "title": "YES"}),
    ]


def test_where_operators_are_typed_by_the_server(listen, make_table, db):
    table = make_table("id int PRIMARY KEY, price numeric(10,2), status text, at timestamptz, note text")
    command = listen("--table", table, "--ops", "insert,update", "--fields", "id",
                     "--where", "price >= 9.5", "--where", 'status in (live, "on, hold")',
                     "--where", "id!=3", "--where", "at<2030-01-01T00:00Z", "--where", "status not in (gone)",
                     "--where-not-null", "note", "--max-events", "3")
    run_sql(db, "INSERT INTO {} VALUES"
                " (1, 9.50, 'live', '2026-01-01', 'n'),"      # matches
                " (2, 9.49, 'live', '2026-01-01', 'n'),"      # price too low
                " (3, 10, 'live', '2026-01-01', 'n'),"        # id 3
                " (4, 10, 'on, hold', '2026-01-01', 'n'),"    # matches: a quoted value with a comma
                " (5, 10, 'gone', '2026-01-01', 'n'),"        # status not listed
                " (6, 10, 'live', '2031-01-01', 'n'),"        # too late
                " (7, 10, 'live', '2026-01-01', NULL)", table)  # note IS NULL
    run_sql(db, "UPDATE {} SET price = 9.5 WHERE id = 2", table)  # enters: an INSERT
    assert command.wait_exit() == 0  # --max-events 3
    events = [json.loads(line) for line in command.lines]
    assert [(e["op"], e["new"]) for e in events] == [
        ("INSERT", {"id": 1}), ("INSERT", {"id": 4}), ("INSERT", {"id": 2}),
    ]


@pytest.mark.parametrize("text, column, op, value", [
    ("status=live", "status", "eq", "live"),
    ("title= a b ", "title", "eq", "a b"),
    ("n=", "n", "eq", ""),
    ("expr=a=b", "expr", "eq", "a=b"),
    ("price>=10", "price", "gte", "10"),
    ("price <= 10", "price", "lte", "10"),
    ("price>10", "price", "gt", "10"),
    ("price<10", "price", "lt", "10"),
    ("id!=3", "id", "neq", "3"),
    ("id<>3", "id", "neq", "3"),
    ("meta={\"a\": 1}", "meta", "eq", '{"a": 1}'),
    ("status in (a,b)", "status", "in", ("a", "b")),
    ("status IN ( a , b )", "status", "in", ("a", "b")),
    ('tag in ("x, y", z)', "tag", "in", ("x, y", "z")),
    ("status not in (gone)", "status", "not_in", ("gone",)),
    ("status NOT  IN(gone,lost)", "status", "not_in", ("gone", "lost")),
])
def test_where_syntax(text, column, op, value):
    condition = parse_where(text)
    assert (condition.column, condition.op, condition.value) == (column, op, value)


@pytest.mark.parametrize("text", ["status", "=3", "<3", "status in ()", "status in a,b"])
def test_where_that_cannot_be_parsed_is_a_usage_error(text, capsys):
    assert main(["listen", "--table", "posts", "--where", text]) == 2
    assert "argument --where:" in capsys.readouterr().err


def test_several_tables_in_one_run(listen, make_table, db):
    posts, comments = make_table(), make_table()
    command = listen("--table", posts, "-t", f"public.{comments}", "-t", posts)  # posts once
    run_sql(db, "INSERT INTO {} (title) VALUES ('p1')", posts)
    run_sql(db, "INSERT INTO {} (title) VALUES ('c1')", comments)
    run_sql(db, "INSERT INTO {} (title) VALUES ('p2')", posts)
    events = command.events(3)
    # Lines of one table keep commit order; between tables there is no order.
    assert [e["new"]["title"] for e in events if e["table"] == f"public.{posts}"] == ["p1", "p2"]
    assert [e["new"]["title"] for e in events if e["table"] == f"public.{comments}"] == ["c1"]
    assert command.stop() == 0
    assert len(command.lines) == 3


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
def test_jq_reads_the_lines(listen, make_table, db):
    table = make_table("id int PRIMARY KEY, price numeric(10,2), raw bytea, at timestamptz")
    command = listen("--table", table, "--max-events", "2", dsn_option=False,  # --dsn from $FLASH_WAL_DSN
                     via_shell="{listen} | jq -c '{op, price: .new.price, raw: (.new.raw | if . then @base64d else . end), "
                               "at: .new.at}'")
    run_sql(db, "INSERT INTO {} VALUES (1, 9.99, 'hi', '2025-01-31 12:00+00')", table)
    run_sql(db, "INSERT INTO {} VALUES (2, NULL, NULL, NULL)", table)
    assert command.wait_exit() == 0, command.stderr
    assert [json.loads(line) for line in command.lines] == [
        {"op": "INSERT", "price": "9.99", "raw": "hi", "at": "2025-01-31T12:00:00+00:00"},
        {"op": "INSERT", "price": None, "raw": None, "at": None},
    ]


def test_a_reader_that_goes_away_ends_the_run_with_141(listen, make_table, db):
    table = make_table()
    command = listen("--table", table, via_shell="{listen} | head -n 1")
    run_sql(db, "INSERT INTO {} (title) VALUES ('one')", table)
    # head exits after one line; listen notices at once, not at its next line.
    assert command.wait_exit() == 141
    assert len(command.lines) == 1 and command.stderr == ""


def test_ctrl_c_exits_130_and_leaves_nothing(listen, make_table, db, names):
    table = make_table()
    command = listen("--table", table)
    run_sql(db, "INSERT INTO {} (title) VALUES ('x')", table)
    command.wait_lines(1)
    assert command.stop(signal.SIGINT) == 130
    assert command.stderr == ""
    assert db.slots(names["slot"]) == [] and db.publications(names["prefix"]) == []


def test_durable_runs_resume_where_the_last_one_stopped(listen, make_table, db, dsn, names):
    table = make_table()
    try:
        first = listen("--table", table, "--durable", "--max-events", "2")
        run_sql(db, "INSERT INTO {} (title) VALUES ('a'), ('b'), ('c')", table)  # one transaction
        assert first.wait_exit() == 0, first.stderr
        assert [json.loads(line)["new"]["title"] for line in first.lines] == ["a", "b"]
        # "c" was held back, so its transaction was not acknowledged: it comes again, whole.
        assert "the next start delivers them again" in first.stderr
        assert db.slots(names["slot"]) == [(names["slot"], False)]  # kept, for the next run

        run_sql(db, "INSERT INTO {} (title) VALUES ('d')", table)  # while nothing runs
        second = listen("--table", table, "--durable")
        assert [json.loads(line)["new"]["title"] for line in second.wait_lines(4)] == ["a", "b", "c", "d"]
        assert second.stop() == 0
        assert len(second.lines) == 4
    finally:
        assert main(["cleanup", "--dsn", dsn, "--slot", names["slot"], "--prefix", names["prefix"], "--yes"]) == 0


@pytest.mark.parametrize("args, status, message", [
    (["--table", "a b"], 2, "flash-wal listen: error: argument -t/--table: cannot parse table name 'a b'"),
    ([], 2, "flash-wal listen: error: the following arguments are required: -t/--table"),
    (["--table", "{table}", "--where", "status"], 2, "argument --where: expected COLUMN=VALUE (or !=, <>, <, <=, >, >=; or 'COLUMN in (A,B)', 'COLUMN not in (A,B)'), got 'status'"),
    (["--table", "{table}", "--ops", "upsert"], 2, "argument --ops: unknown operation 'upsert'"),
    (["--table", "{table}", "--max-events", "0"], 2, "argument -n/--max-events: expected a whole number >= 1"),
    (["--table", "no_such_table"], 1, "flash-wal: error: table public.no_such_table does not exist"),
    (["--table", "{table}", "--where", "id=abc"], 1, 'invalid input syntax for type integer: "abc"'),
    (["--table", "{table}", "--where", "nope=1"], 1, "has no column 'nope'"),
    (["--table", "{table}", "--fields", "id,nope"], 1, "has no column 'nope'"),
    (["--table", "{table}", "--dsn", "postgresql://me:s3cr3t@127.0.0.1:1/db"], 1,
     "flash-wal: error: cannot connect to postgresql://me:***@127.0.0.1:1/db"),
    (["--table", "{table}", "--dsn", "host=127.0.0.1 password='s3cr3t"], 1,
     "flash-wal: error: database_cnx is not a valid connection string"),
])
def test_bad_input_is_one_line_on_stderr(args, status, message, make_table, dsn, db, names):
    table = make_table()
    argv = LISTEN + ["--slot", names["slot"], "--prefix", names["prefix"], "--dsn", dsn]
    argv += [arg.format(table=table) for arg in args]
    run = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert run.returncode == status, run.stderr
    assert len(run.stderr.splitlines()) == 1 and message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and "s3cr3t" not in run.stderr and run.stdout == ""
    assert db.slots(names["slot"]) == [] and db.publications(names["prefix"]) == []


@pytest.mark.parametrize("command", [[], ["demo"], ["status"], ["cleanup"], ["listen"]])
def test_help_for_every_command(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: flash-wal {' '.join(command)}".rstrip())
    for option in ("--help", "--verbose") + (("--dsn",) if command and command != ["demo"] else ()):
        assert option in out
    if not command:
        assert all(name in out for name in ("demo", "status", "cleanup", "listen"))


def test_backfill_prints_existing_rows_then_changes(listen, make_table, db):
    table = make_table()
    run_sql(db, "INSERT INTO {} (title, status) SELECT 'old ' || g, 'x' FROM generate_series(1, 1500) g", table)
    command = listen("--table", table, "--backfill", "--fields", "id,title")
    reads = command.events(1500)
    assert [e["op"] for e in reads] == ["READ"] * 1500
    assert [e["new"]["id"] for e in reads] == list(range(1, 1501))
    assert reads[0]["new"] == {"id": 1, "title": "old 1"} and reads[0]["xid"] is None
    run_sql(db, "INSERT INTO {} (title) VALUES ('new')", table)
    change = command.events(1501)[-1]
    assert (change["op"], change["new"]["title"]) == ("INSERT", "new")
    assert command.stop(signal.SIGTERM) == 0
    assert "Traceback" not in command.stderr


def test_progress_line():
    from flash_wal.cli.progress import progress_line
    line = progress_line({"table": "public.posts", "rows": 12_000, "total": 48_000, "seconds": 2.0,
                          "state": "running"})
    assert line == "public.posts [######..................] 12,000/48,000 rows 6,000/s, 6 s left (running)"
    assert progress_line({"table": "t", "rows": 5, "total": None, "seconds": 0.0, "state": "completed"}) == \
        "t 5 rows 0/s (completed)"
