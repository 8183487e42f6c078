"""flash_wal.contrib.flask, run as a user runs it: the example app of the docs
(docs/examples/flask/app.py) under ``flask`` and a WSGI worker in processes of their
own, against a database of its own on the test server; configuration errors in this
process."""

import os
import signal
import sys
import uuid
from typing import Any, Callable, Dict, Iterator

import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

flask = pytest.importorskip("flask")

from flash_wal import ConfigurationError  # noqa: E402
from flash_wal.contrib.flask import FlashWal  # noqa: E402

from tests.support.database import Database
from tests.support.processes import free_port, ROOT, WatchedProcess
from tests.support.recorder import Recorder
from tests.support.web import run_command_for_one_row, run_dev_server_with_reloader, run_two_autostarted_workers

EXAMPLE = os.path.join(ROOT, "docs", "examples", "flask")
#: The example app, with flash_wal's log on stderr.
LOGGING_APP = """\
import logging

logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("flash_wal").setLevel(logging.INFO)

from app import create_app  # noqa
"""


@pytest.fixture(scope="module")
def flask_database(dsn: str) -> Iterator[str]:
    """A database of its own with the example's table; yields its connection string."""
    name = f"flask_{uuid.uuid4().hex[:8]}"
    admin = Database(dsn)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = parse_dsn(dsn)
    params["dbname"] = name
    database_dsn = make_dsn(**params)
    database = Database(database_dsn)
    database.execute("CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL)")
    database.close()
    try:
        yield database_dsn
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture
def posts(flask_database: str) -> Iterator[Database]:
    database = Database(flask_database)
    yield database
    database.execute("TRUNCATE posts")
    database.close()


class App:
    """The example app, run with slot names unique to the test."""

    def __init__(self, directory: Any, database_dsn: str, slot: str, spawn: Callable[..., WatchedProcess]) -> None:
        self.directory = str(directory)
        self.database_dsn = database_dsn
        self.slot = slot
        self.prefix = f"pub_{slot}"
        self.spawn = spawn
        with open(os.path.join(self.directory, "logging_app.py"), "w", encoding="utf-8") as fh:
            fh.write(LOGGING_APP)

    def env(self, **config: str) -> Dict[str, str]:
        """The environment, with ``FLASK_FLASH_WAL_<NAME>`` for each ``config`` item
        (the example reads them with ``app.config.from_prefixed_env()``)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "FLASK_"))}
        env.update(
            DATABASE_URL=self.database_dsn,
            FLASK_FLASH_WAL_REPLICATION_SLOT=self.slot,
            FLASK_FLASH_WAL_PUBLICATION_SLOT_PREFIX=self.prefix,
            PYTHONPATH=os.pathsep.join([self.directory, EXAMPLE, ROOT]),
            PYTHONUNBUFFERED="1",
        )
        env.update({f"FLASK_FLASH_WAL_{name}": value for name, value in config.items()})
        return env

    def flask(self, env: Dict[str, str], *args: str, app: str = "app") -> WatchedProcess:
        return self.spawn([sys.executable, "-m", "flask", "--app", app, *args], cwd=EXAMPLE, env=env)

    def worker(self, env: Dict[str, str]) -> WatchedProcess:
        return self.spawn([sys.executable, "-m", "tests.support.web_worker", "logging_app:create_app()"], cwd=ROOT, env=env)


@pytest.fixture
def example(flask_database: str, tmp_path: Any, unique: str, spawn: Callable[..., WatchedProcess]) -> App:
    return App(tmp_path, flask_database, f"fl_{unique}", spawn)


def assert_nothing_left(db: Database, app: App) -> None:
    assert db.slots(app.slot) == [], "slot left behind"
    assert db.publications(app.prefix) == [], "publication left behind"


def insert_post(posts: Database, title: str) -> None:
    posts.execute("INSERT INTO posts (title) VALUES (%s)", (title,))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_flask_flash_wal_run_delivers_and_stops_cleanly(example, posts, db, stop_signal):
    command = example.flask(example.env(), "flash-wal", "run")
    try:
        command.wait_output("flash_wal: streaming public.posts")
        insert_post(posts, "Hello")
        command.wait_output("new post: Hello")
        assert db.slots(example.slot) == [(example.slot, True)]
    finally:
        command.proc.send_signal(stop_signal)
    assert command.wait_exit() == 0, command.output
    assert command.lines[-2:] == [f"flash_wal: {stop_signal.name} received, closing", "flash_wal: closed"]
    assert_nothing_left(db, example)


def test_flask_flash_wal_run_is_not_autostarted_twice(example, posts, db):
    command = example.flask(example.env(AUTOSTART="true"), "flash-wal", "run", app="logging_app")
    run_command_for_one_row(command, lambda title: insert_post(posts, title))
    assert "not starting automatically: a flask command other than 'flask run' runs" in command.output
    assert "not listening" not in command.output
    assert_nothing_left(db, example)


def test_bad_setting_from_the_environment_stops_the_command(example, db):
    command = example.flask(example.env(DURABLE='"yes"'), "flash-wal", "run")
    assert command.wait_exit() != 0
    assert "FLASH_WAL_DURABLE must be bool, got 'yes'" in command.output
    assert_nothing_left(db, example)


def test_autostart_under_flask_run_with_the_reloader_starts_in_the_serving_process_only(example, posts, db):
    server = example.flask(
        example.env(AUTOSTART="true"), "run", "--debug", "--port", str(free_port()), app="logging_app"
    )
    run_dev_server_with_reloader(
        server, "this is the reloader of 'flask run'", lambda title: insert_post(posts, title)
    )
    assert_nothing_left(db, example)  # closed at exit


def test_autostart_in_two_web_workers_one_listens_the_other_warns_and_serves(example, posts, db):
    env = example.env(AUTOSTART="true")
    run_two_autostarted_workers(lambda: example.worker(env), example.slot, lambda title: insert_post(posts, title))
    assert_nothing_left(db, example)  # the listening worker closed its client at exit


def test_autostart_is_skipped_by_other_flask_commands(example, db):
    command = example.flask(example.env(AUTOSTART="true"), "routes", app="logging_app")
    assert command.wait_exit() == 0, command.output
    assert "not starting automatically: 'flask routes' is a command, not a web server" in command.output
    assert_nothing_left(db, example)


# --- in this process ----------------------------------------------------------------------


def make_app(**config: Any) -> "flask.Flask":
    app = flask.Flask(__name__)
    app.config.update({f"FLASH_WAL_{name}": value for name, value in config.items()})
    return app


def test_single_module_app_attaches_listeners_declared_after_autostart(flask_database, posts, db, unique):
    slot = f"fl_{unique}"
    flash = FlashWal(make_app(
        DATABASE_CNX=flask_database, AUTOSTART=True, REPLICATION_SLOT=slot, PUBLICATION_SLOT_PREFIX=f"pub_{slot}"
    ))
    client = flash.client
    assert client is not None and client.listeners == []
    try:
        recorder = Recorder()
        flash.on("posts", "insert")(recorder)  # as the decorators below FlashWal(app) do
        insert_post(posts, "attached while running")
        assert recorder.wait(1)[0].new["title"] == "attached while running"
    finally:
        client.close()
    assert db.slots(slot) == [] and db.publications(f"pub_{slot}") == []


def test_missing_database_cnx_says_what_to_set():
    with pytest.raises(ConfigurationError, match=r"FLASH_WAL_DATABASE_CNX is not set: set app.config\['FLASH_WAL_DATABASE_CNX'\]"):
        FlashWal(make_app())


def test_unknown_setting_is_named_with_the_valid_ones():
    with pytest.raises(ConfigurationError) as caught:
        FlashWal(make_app(DATABASE_CNX="dbname=x", SLOT="x", TIMEOUT=1))
    message = str(caught.value)
    assert message.startswith("unknown flash_wal settings FLASH_WAL_SLOT, FLASH_WAL_TIMEOUT; the settings are AUTOSTART,")
    assert "REPLICATION_SLOT" in message and "SHUTDOWN_TIMEOUT" in message


def test_autostart_must_be_a_bool():
    with pytest.raises(ConfigurationError, match="FLASH_WAL_AUTOSTART must be True or False, got 'yes'"):
        FlashWal(make_app(DATABASE_CNX="dbname=x", AUTOSTART="yes"))


def record_error(exc: BaseException, event: Any) -> None:
    """An on_error handler named by its dotted path in a test below."""


def test_on_error_may_be_a_dotted_path():
    flash = FlashWal()
    app = make_app(DATABASE_CNX="dbname=x", ON_ERROR="tests.web.test_flask.record_error")
    assert flash.settings(app).client.on_error is record_error
    app.config["FLASH_WAL_ON_ERROR"] = "tests.web.test_flask.no_such_handler"
    with pytest.raises(ConfigurationError, match="FLASH_WAL_ON_ERROR: cannot import 'tests.web.test_flask.no_such_handler'"):
        flash.settings(app)


def test_run_without_listeners_says_where_to_declare_them():
    app = make_app(DATABASE_CNX="dbname=x")
    FlashWal(app)
    result = app.test_cli_runner().invoke(args=["flash-wal", "run"])
    assert result.exit_code == 1
    assert "no listeners are declared: declare them with @flash.on(...)" in result.output
