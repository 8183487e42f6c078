"""The examples of docs/ (files under docs/examples/) run, and print what the docs show."""

import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from flash_wal.cli import LISTEN_SLOT
from flash_wal.connection import mask_dsn
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from .conftest import ROOT, wait_for

EXAMPLES = os.path.join(ROOT, "docs", "examples")
#: The command-line examples, in the order they run: the cleanup drops what the audit keeps.
SHELL_EXAMPLES = ["published-titles", "price-changes", "durable-audit", "durable-cleanup"]


def example(name: str) -> str:
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as fh:
        return fh.read()


def test_every_example_file_is_shown_in_the_docs_and_run_here():
    shown = set()
    for page in glob.glob(os.path.join(ROOT, "docs", "*.rst")):
        with open(page, encoding="utf-8") as fh:
            shown.update(re.findall(r"^\.\. literalinclude:: examples/(\S+)$", fh.read(), re.M))
    files = set(os.listdir(EXAMPLES))
    assert files == shown
    run_here = {f"{name}.{ext}" for name in SHELL_EXAMPLES for ext in ("sh", "sql", "out")}
    run_here |= {"posts.sql", "logging_setup.py", "logging_setup.out"}
    assert files <= run_here


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
                for statement in example(f"{name}.sql").split(";\n"):
                    if statement.strip():
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
