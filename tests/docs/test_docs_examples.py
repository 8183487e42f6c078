"""Every example in the documentation runs, against the test server, and prints what
the documentation shows.

The docs hold no code of their own: each example is a file in docs/examples/ that the
pages include (``literalinclude``), with the output it must print beside it
(``name.out``, included too). A standalone Python example runs in a database of its
own and must leave no replication slot and no publication behind; the command-line
examples and the logging fragment have tests of their own below.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import Client
from flash_wal.cli.listen import LISTEN_SLOT
from flash_wal.connection import mask_dsn
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.processes import ROOT
from tests.support.waiting import wait_for

DOCS = os.path.join(ROOT, "docs")
EXAMPLES = os.path.join(DOCS, "examples")
PAGES = sorted(glob.glob(os.path.join(DOCS, "*.rst")))
#: The command-line examples, in the order they run: the cleanup drops what the audit keeps.
SHELL_EXAMPLES = ["published-titles", "price-changes", "durable-audit", "durable-cleanup"]
#: Python examples that are fragments of a program, run by a test of their own.
FRAGMENTS = {"logging_setup.py"}
#: The SQL of the server set-up page, run by test_server_setup_sql.
SERVER_SETUP_SQL = ["wal_level.sql", "listening_role.sql", "what_is_there.sql"]
#: What flash_wal changes on tables and how to undo it, run by test_identity_sql.
IDENTITY_SQL = ["undo_identity.sql"]
STANDALONE = sorted(
    path for path in glob.glob(os.path.join(EXAMPLES, "*.py")) if os.path.basename(path) not in FRAGMENTS
)


def example(name: str) -> str:
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as fh:
        return fh.read()


def _statements(name: str):
    """The statements of an example .sql file."""
    return [statement for statement in example(name).split(";\n") if statement.strip()]


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _page(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_docs_have_no_untested_python():
    python_blocks = [
        os.path.basename(page)
        for page in PAGES
        for _ in re.finditer(r"^\s*\.\. code-block:: (python|pycon)\s*$", _page(page), re.M)
    ]
    assert not python_blocks, f"Python code blocks in {python_blocks}: make them docs/examples files"


def test_every_example_file_is_shown_in_the_docs_and_run_here():
    shown = set()
    for page in PAGES:
        shown.update(re.findall(r"^\s*\.\. literalinclude:: examples/(\S+)$", _page(page), re.M))
    # The Django project and the Flask app (subdirectories) are run by test_django.py
    # and test_flask.py.
    files = {name for name in os.listdir(EXAMPLES) if os.path.isfile(os.path.join(EXAMPLES, name))}
    assert files == {name for name in shown if "/" not in name}
    run_here = {f"{name}.{ext}" for name in SHELL_EXAMPLES for ext in ("sh", "sql", "out")}
    run_here |= {"posts.sql", "logging_setup.py", "logging_setup.out"}
    run_here |= set(SERVER_SETUP_SQL) | set(IDENTITY_SQL)
    for path in STANDALONE:
        run_here |= {f"{_name(path)}.py", f"{_name(path)}.out"}
    assert files <= run_here


@pytest.mark.parametrize("path", STANDALONE, ids=_name)
def test_example_runs_and_prints_what_the_docs_show(path, dsn, db, tmp_path):
    database = f"docs_example_{_name(path)}"
    db.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
    db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    example_dsn = psycopg2.extensions.make_dsn(dsn, dbname=database)
    env = dict(os.environ, FLASH_WAL_DSN=example_dsn)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    try:
        result = subprocess.run(
            [sys.executable, path], cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        expected_path = os.path.splitext(path)[0] + ".out"
        if os.path.exists(expected_path):
            with open(expected_path, encoding="utf-8") as fh:
                assert result.stdout == fh.read()
        # A temporary slot goes when its walsender has exited, a moment after close().
        wait_for(
            lambda: not db.fetchall("SELECT 1 FROM pg_replication_slots WHERE database = %s", (database,)),
            what=f"no replication slot left in {database}",
        )
        with psycopg2.connect(example_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT pubname FROM pg_publication")
            assert cur.fetchall() == []
        conn.close()
    finally:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@pytest.mark.parametrize("path", [
    "flash_wal.ClientConfig", "flash_wal.drivers.wal_logical.DriverConfig", "flash_wal.ListenerConfig",
])
def test_every_configuration_field_is_documented_in_the_code(path):
    """docs/configuration.rst is generated from these comments (docs/_ext/config_table.py)."""
    pytest.importorskip("sphinx")
    sys.path.insert(0, os.path.join(DOCS, "_ext"))
    try:
        import config_table
    finally:
        sys.path.remove(os.path.join(DOCS, "_ext"))
    undocumented = [
        field.name for field, meaning in config_table.documented_fields(config_table.import_config_class(path))
        if not meaning
    ]
    assert undocumented == []


@pytest.fixture
def empty_posts(db):
    """Makes public.posts afresh, as docs/examples/posts.sql says; dropped at the end."""
    if db.fetchone("SELECT to_regclass('public.posts')")[0] is not None:
        pytest.skip("public.posts already exists on the test server; the examples use it")

    def make():
        db.execute("DROP TABLE IF EXISTS public.posts")
        db.execute(example("posts.sql"))

    yield make
    db.execute("DROP TABLE IF EXISTS public.posts")


@pytest.mark.skipif(shutil.which("jq") is None, reason="the examples use jq")
def test_command_line_examples_print_what_the_docs_show(empty_posts, db, dsn, tmp_path):
    env = dict(os.environ, FLASH_WAL_DSN=dsn)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # flash-wal
    try:
        for name in SHELL_EXAMPLES:
            empty_posts()
            script = example(f"{name}.sh")
            proc = subprocess.Popen(["bash", "-o", "pipefail", "-c", script], cwd=str(tmp_path), env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            if os.path.exists(os.path.join(EXAMPLES, f"{name}.sql")):
                slot = (re.findall(r"--slot (\S+)", script) or [LISTEN_SLOT])[0]
                wait_for(lambda: proc.poll() is not None or db.streams(slot), what=f"{name} to stream")
                for statement in _statements(f"{name}.sql"):
                    db.execute(statement)
            out, err = proc.communicate(timeout=60)
            assert (proc.returncode, err) == (0, ""), name
            assert out == example(f"{name}.out"), name
    finally:
        Driver(DriverConfig(replication_slot="posts_audit")).drop(dsn)  # if the cleanup example failed


def test_logging_example_logs_what_the_docs_show(empty_posts, db, dsn_with_password):
    empty_posts()
    uri, _ = dsn_with_password
    program = example("logging_setup.py") + textwrap.dedent(f"""
        import threading

        import psycopg2

        from flash_wal import Client

        client = Client(database_cnx={uri!r})
        seen = threading.Semaphore(0)
        client.on("posts")(lambda event: seen.release())
        with client:
            with psycopg2.connect({uri!r}) as conn, conn.cursor() as cursor:
                cursor.execute("INSERT INTO posts (title) VALUES ('a'), ('b'), ('c')")
            for _ in range(3):
                assert seen.acquire(timeout=30)
    """)
    run = subprocess.run([sys.executable, "-c", program], cwd=ROOT, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    shown = run.stderr.replace(mask_dsn(uri), "postgresql://app:***@db.example.com/app")
    shown = re.sub(r"pgoutput protocol \d", "pgoutput protocol 4", shown)  # 3 on PostgreSQL 15
    assert shown == example("logging_setup.out")


def test_server_setup_sql(db, dsn):
    # wal_level: the test server has it already; the statement only writes
    # postgresql.auto.conf, which takes effect at a restart, and is undone here.
    try:
        for statement in _statements("wal_level.sql"):
            db.execute(statement)
        assert db.fetchone(
            "SELECT setting FROM pg_catalog.pg_file_settings WHERE name = 'wal_level' AND applied IS NOT NULL"
            " ORDER BY seqno DESC LIMIT 1"
        ) == ("logical",)
    finally:
        db.execute("ALTER SYSTEM RESET wal_level")

    # The role for listening: made as the page says, in a database named appdb there.
    database = "docs_example_appdb"
    db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    db.execute("DROP ROLE IF EXISTS app_listener")
    db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    owner_dsn = psycopg2.extensions.make_dsn(dsn, dbname=database)
    listener_dsn = psycopg2.extensions.make_dsn(owner_dsn, user="app_listener", password="change me")
    try:
        # Not "with connection:": since psycopg2 2.9 that opens a transaction even in
        # autocommit mode, and the role must exist for the client's connections.
        owner = psycopg2.connect(owner_dsn)
        owner.autocommit = True
        cur = owner.cursor()
        cur.execute("CREATE TABLE posts (id int PRIMARY KEY, title text)")
        for statement in _statements("listening_role.sql"):
            cur.execute(statement.replace("appdb", database))
        received = []
        client = Client(database_cnx=listener_dsn)
        client.on("posts", "insert")(received.append)
        with client:
            cur.execute("INSERT INTO posts VALUES (1, 'as app_listener')")
            wait_for(lambda: received, what="the insert, delivered to app_listener")
            # What is there, while a client runs.
            for statement in _statements("what_is_there.sql"):
                cur.execute(statement)
                assert cur.fetchall() is not None
        assert received[0].new == {"id": 1, "title": "as app_listener"}
        owner.close()
    finally:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        db.execute("DROP ROLE IF EXISTS app_listener")


def test_identity_sql(db, dsn, server_version):
    """The undo SQL puts the tables and partitions back and removes the trigger; the
    trigger's SQL, which the page shows from flash_wal's source, works installed by hand."""
    if server_version < 130000:
        pytest.skip("partitioned tables are published from PostgreSQL 13")
    from flash_wal.drivers.wal_logical.identity import PARTITION_IDENTITY_SQL

    database = "docs_example_identity"
    db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    example_dsn = psycopg2.extensions.make_dsn(dsn, dbname=database)
    try:
        conn = psycopg2.connect(example_dsn)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(example("posts.sql"))
        cur.execute("CREATE TABLE measurements (at date, value float8) PARTITION BY RANGE (at);"
                    " CREATE TABLE measurements_2025 PARTITION OF measurements"
                    "   FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")

        def identities():
            cur.execute("SELECT relname::text, relreplident::text FROM pg_class"
                        " WHERE relname IN ('posts', 'measurements', 'measurements_2025', 'measurements_2026')")
            return dict(cur.fetchall())

        def trigger():
            cur.execute("SELECT count(*) FROM pg_event_trigger")
            return cur.fetchone()[0]

        client = Client(database_cnx=example_dsn)
        client.on("posts")(lambda event: None)
        client.on("measurements")(lambda event: None)
        with client:
            cur.execute("CREATE TABLE measurements_2026 PARTITION OF measurements"
                        " FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
        assert set(identities().values()) == {"f"} and trigger() == 1
        cur.execute(example("undo_identity.sql"))
        assert set(identities().values()) == {"d"} and trigger() == 0
        cur.execute("SELECT to_regprocedure('public.flash_wal_partition_identity()')")
        assert cur.fetchone() == (None,)

        # Installed by hand as the page shows, it does what flash_wal's does.
        cur.execute(PARTITION_IDENTITY_SQL)
        cur.execute("ALTER TABLE measurements REPLICA IDENTITY FULL")
        assert identities() == {"posts": "d", "measurements": "f", "measurements_2025": "f", "measurements_2026": "f"}
        cur.execute("DROP TABLE measurements_2026")
        cur.execute("CREATE TABLE measurements_2026 PARTITION OF measurements"
                    " FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
        assert identities()["measurements_2026"] == "f"
        conn.close()
    finally:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
