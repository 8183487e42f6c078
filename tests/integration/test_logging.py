"""The ``flash_wal`` loggers are quiet in steady state, and a DSN's password never shows:
not in log records, exception messages, reprs, or the command line's errors."""

import logging
import subprocess
import sys

import psycopg2
import pytest
from psycopg2 import sql

from flash_wal import Client, ClientConfig, FlashError, Operation
from flash_wal.connection import connect, mask_dsn, mask_secrets
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.database import SECRET
from tests.support.processes import ROOT
from tests.support.recorder import Recorder


def secret_fragments(text):
    """The pieces of SECRET, or of a password under test, found in ``text``."""
    return [piece for piece in (SECRET, "s3cr3t", "Pw") if piece in text]


# --- mask_dsn and mask_secrets ----------------------------------------------------------


@pytest.mark.parametrize("dsn, masked", [
    ("postgresql://u:hunter2@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgres://u:hunter2@h/db?sslmode=require&password=other",
     "postgres://u:***@h/db?sslmode=require&password=***"),
    ("postgresql://h/db?password=hunter2", "postgresql://h/db?password=***"),
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    ("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db"),
    ("postgresql://u:p@ss/w@h/db", "postgresql://u:***@h/db"),  # unencoded "@" and "/"
    ("postgresql://u:%41b%40c@h/db", "postgresql://u:***@h/db"),
    ("host=h user=u password=hunter2 dbname=db", "host=h user=u password=*** dbname=db"),
    ("host=h password = hunter2", "host=h password = ***"),
    ("host=h password='two words\\' quote' user=u", "host=h password=*** user=u"),
    ("host=h password=two words user=u", "host=h password=*** user=u"),  # what libpq rejects
    ("host=h password='unterminated user=u", "host=h password=***"),
    ("host=h PASSWORD=hunter2", "host=h PASSWORD=***"),
    ("host=h passfile=/tmp/pass dbname=db", "host=h passfile=/tmp/pass dbname=db"),
    ("", ""),
])
def test_mask_dsn_keeps_the_form_and_hides_the_password(dsn, masked):
    assert mask_dsn(dsn) == masked


def test_mask_secrets_finds_the_password_in_every_form_a_message_quotes():
    dsn = "postgresql://u:p%40ss%2Fword@h/db"
    message = f"failed for {dsn}; token 'p%40ss%2Fword'; decoded \"p@ss/word\"; word alone; keep 'pass'"
    assert mask_secrets(message, dsn) == (
        "failed for postgresql://u:***@h/db; token '***'; decoded \"***\"; *** alone; keep 'pass'"
    )
    assert mask_secrets("nothing secret", "") == "nothing secret"


@pytest.mark.parametrize("dsn", [
    f"postgresql://u:{SECRET}/x@127.0.0.1:1/db",   # libpq takes part of it for the port
    f"postgresql://u:{SECRET}@x@127.0.0.1:1/db",   # ... or for the host
    f"host=127.0.0.1 password=my {SECRET}",      # ... or for a keyword
    f"postgresql://u:{SECRET}@[::1/db",           # ... or quotes the whole URI
    f"postgresql://u:%zz{SECRET}@127.0.0.1/db",   # ... or the bad token
    f"host=127.0.0.1 port=1 password={SECRET} connect_timeout=2",
])
def test_connection_errors_never_quote_the_password(dsn, caplog):
    with pytest.raises((FlashError, psycopg2.Error)) as info:
        connect(dsn)
    chain = []
    error = info.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert not secret_fragments(" ".join(chain)), chain

    client = Client(database_cnx=dsn, driver=Driver(DriverConfig(slot_wait_timeout=0.5)))
    with caplog.at_level(logging.DEBUG, logger="flash_wal"):
        with pytest.raises(FlashError) as info:
            client.start()
    assert not secret_fragments(str(info.value))
    assert not secret_fragments(caplog.text)
    assert not secret_fragments(repr(client.config) + repr(client))


# --- steady state -----------------------------------------------------------------------


def test_a_client_logs_start_and_stop_at_info_and_nothing_per_transaction(dsn_with_password, make_table, db, unique,
                                                                          caplog):
    uri, password = dsn_with_password
    table = make_table()
    db.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(table)))
    client = Client(ClientConfig(database_cnx=uri, driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}"))))
    recorder = Recorder()
    client.on(table, Operation.ALL)(recorder)
    with caplog.at_level(logging.DEBUG, logger="flash_wal"):
        with client:
            for n in range(5):
                db.execute(sql.SQL("INSERT INTO {} (title) VALUES (%s)").format(sql.Identifier(table)), (str(n),))
            recorder.wait(5)
            shown = repr(client) + repr(client.config) + str(client.stats())

    records = [r for r in caplog.records if r.name.startswith("flash_wal")]
    info = [(r.name, r.getMessage()) for r in records if r.levelno >= logging.INFO]
    assert [name for name, _ in info] == ["flash_wal.drivers.wal_logical.driver", "flash_wal.client"], info
    assert info[0][1].startswith(f"streaming from {mask_dsn(uri)}: tables public.{table}, temporary slot")
    assert info[1][1] == "closed: 5 events delivered, 0 callbacks failed"
    # What happens per transaction is there for whoever asks for DEBUG.
    assert any(r.getMessage().startswith("acknowledged up to ") for r in records if r.levelno == logging.DEBUG)
    assert password not in caplog.text + shown
    assert "***" in info[0][1]


def test_the_command_line_masks_the_password_in_its_errors(tmp_path):
    dsn = f"postgresql://someone:{SECRET}/x@127.0.0.1:1/nothing"
    for command in (["status"], ["cleanup", "--yes"], ["listen", "--table", "posts"]):
        for verbose in ([], ["-vv"]):
            run = subprocess.run([sys.executable, "-m", "flash_wal", *command, "--dsn", dsn, *verbose],
                                 cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            assert run.returncode == 1, run.stderr
            assert run.stderr.startswith("flash-wal: error: ") and "Traceback" not in run.stderr
            assert not secret_fragments(run.stderr + run.stdout), run.stderr
