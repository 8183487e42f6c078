"""Every Python example in the documentation runs, against the test server, and prints
what the documentation shows.

The docs hold no Python code of their own: each example is a file in docs/examples/
that the pages include (``literalinclude``), with the output it must print beside it
(``name.out``, included too). Each runs in a database of its own and must leave no
replication slot and no publication behind.
"""

import glob
import os
import re
import subprocess
import sys

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from .conftest import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
EXAMPLES = sorted(glob.glob(os.path.join(DOCS, "examples", "*.py")))
PAGES = sorted(glob.glob(os.path.join(DOCS, "*.rst")))


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _page_texts() -> str:
    texts = []
    for page in PAGES:
        with open(page, encoding="utf-8") as fh:
            texts.append(fh.read())
    return "\n".join(texts)


def test_docs_have_no_untested_python():
    python_blocks = [
        os.path.basename(page)
        for page in PAGES
        for _ in re.finditer(r"^\s*\.\. code-block:: (python|pycon)\s*$", open(page, encoding="utf-8").read(), re.M)
    ]
    assert not python_blocks, f"Python code blocks in {python_blocks}: make them docs/examples files"


def test_every_example_is_shown():
    shown = set(re.findall(r"literalinclude:: examples/(\w+)\.py", _page_texts()))
    assert shown == {_name(path) for path in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=_name)
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
    import importlib

    import attr
    analyzer = pytest.importorskip("sphinx.pycode").ModuleAnalyzer
    module_name, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    documented = {attribute for (owner, attribute) in analyzer.for_module(cls.__module__).find_attr_docs()
                  if owner == name}
    assert {field.name for field in attr.fields(cls) if field.init} <= documented
