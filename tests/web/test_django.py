"""flash_wal.contrib.django, run as a user runs it: the example project of the docs
(docs/examples/django) with ``manage.py`` and a WSGI worker in processes of their own,
against a database of its own on the test server."""

import os
import signal
import sys
import uuid
from typing import Any, Callable, Dict, Iterator

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

pytest.importorskip("django")

from flash_wal import ConfigurationError  # noqa: E402
from flash_wal.contrib.django import _table_name  # noqa: E402
from flash_wal.contrib.django.conf import database_cnx_from  # noqa: E402

from tests.support.database import Database
from tests.support.processes import free_port, ROOT, WatchedProcess
from tests.support.web import run_command_for_one_row, run_dev_server_with_reloader, run_two_autostarted_workers

PROJECT = os.path.join(ROOT, "docs", "examples", "django")
SETTINGS_MODULE = "flash_wal_test_settings"
SQLITE_DEFAULT = "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}\n"


@pytest.fixture(scope="module")
def django_database(dsn: str) -> Iterator[Dict[str, Any]]:
    """A database of its own, migrated: settings.DATABASES['default'] for it."""
    name = f"django_{uuid.uuid4().hex[:8]}"
    admin = Database(dsn)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = parse_dsn(dsn)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": {key: value for key, value in params.items() if key != "dbname"},
    }
    try:
        yield database
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


class Project:
    """The example project with settings of the test's own: its database, slot names
    unique to the test, flash_wal's log on stderr, and what the test adds."""

    def __init__(self, directory: Any, database: Dict[str, Any], slot: str, spawn: Callable[..., WatchedProcess]) -> None:
        self.directory = str(directory)
        self.database = database
        self.slot = slot
        self.prefix = f"pub_{slot}"
        self.spawn = spawn

    def settings(self, flash_wal: Dict[str, Any], extra: str = "") -> Dict[str, str]:
        """Write the settings module; returns the environment to run the project with."""
        flash_wal = {"REPLICATION_SLOT": self.slot, "PUBLICATION_SLOT_PREFIX": self.prefix, **flash_wal}
        with open(os.path.join(self.directory, f"{SETTINGS_MODULE}.py"), "w", encoding="utf-8") as fh:
            fh.write(
                "from mysite.settings import *  # noqa\n"
                f"DATABASES = {{'default': {self.database!r}}}\n"
                f"FLASH_WAL = {flash_wal!r}\n"
                "LOGGING = {'version': 1, 'disable_existing_loggers': False,"
                " 'handlers': {'stderr': {'class': 'logging.StreamHandler'}},"
                " 'loggers': {'flash_wal': {'handlers': ['stderr'], 'level': 'INFO'}}}\n"
                + extra
            )
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(
            DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
            PYTHONPATH=os.pathsep.join([self.directory, PROJECT, ROOT]),
            PYTHONUNBUFFERED="1",
        )
        return env

    def manage(self, env: Dict[str, str], *args: str) -> WatchedProcess:
        return self.spawn([sys.executable, "manage.py", *args], cwd=PROJECT, env=env)

    def worker(self, env: Dict[str, str]) -> WatchedProcess:
        return self.spawn([sys.executable, "-m", "tests.support.web_worker", "mysite.wsgi:application"], cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def migrated(django_database: Dict[str, Any], tmp_path_factory: Any) -> Dict[str, Any]:
    project = Project(tmp_path_factory.mktemp("django_migrate"), django_database, "unused", WatchedProcess)
    migrate = project.manage(project.settings({}), "migrate", "--verbosity", "0")
    assert migrate.wait_exit(120) == 0, migrate.output
    return django_database


@pytest.fixture
def project(migrated: Dict[str, Any], tmp_path: Any, unique: str, spawn: Callable[..., WatchedProcess]) -> Project:
    return Project(tmp_path, migrated, f"dj_{unique}", spawn)


@pytest.fixture
def blog(migrated: Dict[str, Any], dsn: str) -> Iterator[Database]:
    """A connection to the project's database."""
    params = parse_dsn(dsn)
    params["dbname"] = migrated["NAME"]
    database = Database(psycopg2.extensions.make_dsn(**params))
    yield database
    database.execute("TRUNCATE blog_post")
    database.close()


def assert_nothing_left(db: Database, project: Project) -> None:
    assert db.slots(project.slot) == [], "slot left behind"
    assert db.publications(project.prefix) == [], "publication left behind"


def insert_post(blog: Database, title: str) -> int:
    return blog.fetchone("INSERT INTO blog_post (title, published) VALUES (%s, false) RETURNING id", (title,))[0]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_manage_py_flash_wal_delivers_and_stops_cleanly(project, blog, db, stop_signal):
    command = project.manage(project.settings({}), "flash_wal")
    try:
        command.wait_output("flash_wal: streaming public.blog_post")
        post_id = insert_post(blog, "Hello")
        blog.execute("UPDATE blog_post SET published = true WHERE id = %s", (post_id,))
        command.wait_output("new post: Hello")
        command.wait_output(f"published: {post_id}")
        assert db.slots(project.slot) == [(project.slot, True)]
    finally:
        command.proc.send_signal(stop_signal)
    assert command.wait_exit() == 0, command.output
    announced = [line for line in command.lines if line.startswith("flash_wal: ")]
    assert announced[-2:] == [f"flash_wal: {stop_signal.name} received, closing", "flash_wal: closed"]
    assert_nothing_left(db, project)


def test_manage_py_flash_wal_is_not_autostarted_twice(project, blog, db):
    """With AUTOSTART on, the command's own process does not start a second client."""
    command = project.manage(project.settings({"AUTOSTART": True}), "flash_wal")
    run_command_for_one_row(command, lambda title: insert_post(blog, title))
    assert "not starting automatically: 'flash_wal' is a management command, not a web server" in command.output
    assert "not listening" not in command.output
    assert_nothing_left(db, project)


def test_command_without_listeners_says_where_to_declare_them(project, db):
    env = project.settings({}, extra="INSTALLED_APPS = ['flash_wal.contrib.django']\n")
    command = project.manage(env, "flash_wal")
    assert command.wait_exit() == 1
    assert "no listeners are declared: declare them with @flash.on(...) in a listeners.py module" in command.output
    assert_nothing_left(db, project)


def test_unknown_setting_is_named_with_the_valid_ones(project):
    command = project.manage(project.settings({"SLOT": "x"}), "check")
    assert command.wait_exit() == 1
    assert "unknown flash_wal setting FLASH_WAL['SLOT']; the settings are AUTOSTART, DATABASE_CNX," in command.output
    assert "REPLICATION_SLOT" in command.output


def test_bad_setting_value_is_named_as_in_settings(project):
    command = project.manage(project.settings({"DURABLE": "yes"}), "flash_wal")
    assert command.wait_exit() == 1
    assert "FLASH_WAL['DURABLE'] must be bool, got 'yes'" in command.output


def test_default_database_that_is_not_postgresql_needs_database_cnx(project):
    command = project.manage(project.settings({}, extra=SQLITE_DEFAULT), "flash_wal")
    assert command.wait_exit() == 1
    assert "DATABASES['default'] is not PostgreSQL" in command.output
    assert "set FLASH_WAL['DATABASE_CNX']" in command.output


def test_database_cnx_setting_is_used_instead_of_databases(project, blog, db, dsn, migrated):
    params = parse_dsn(dsn)
    params["dbname"] = migrated["NAME"]
    env = project.settings({"DATABASE_CNX": psycopg2.extensions.make_dsn(**params)}, extra=SQLITE_DEFAULT)
    run_command_for_one_row(project.manage(env, "flash_wal"), lambda title: insert_post(blog, title))
    assert_nothing_left(db, project)


def test_autostart_under_runserver_starts_in_the_serving_process_only(project, blog, db):
    server = project.manage(project.settings({"AUTOSTART": True}), "runserver", f"127.0.0.1:{free_port()}")
    run_dev_server_with_reloader(
        server, "this is runserver's autoreloader", lambda title: insert_post(blog, title)
    )
    assert_nothing_left(db, project)  # closed at exit


def test_autostart_in_two_web_workers_one_listens_the_other_warns_and_serves(project, blog, db):
    env = project.settings({"AUTOSTART": True})
    run_two_autostarted_workers(lambda: project.worker(env), project.slot, lambda title: insert_post(blog, title))
    assert_nothing_left(db, project)  # the listening worker closed its client at exit


def test_autostart_is_skipped_by_other_management_commands(project, db):
    command = project.manage(project.settings({"AUTOSTART": True}), "check")
    assert command.wait_exit() == 0, command.output
    assert "not starting automatically: 'check' is a management command, not a web server" in command.output
    assert_nothing_left(db, project)


# --- in this process ----------------------------------------------------------------------


def test_connection_string_from_databases_is_quoted_for_libpq(dsn, db, unique):
    name = f"dj {unique} it's \\ here"
    db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        params = parse_dsn(dsn)
        cnx = database_cnx_from({
            "NAME": name, "USER": params.get("user", ""), "PASSWORD": params.get("password", ""),
            "HOST": params.get("host", ""), "PORT": params.get("port", ""),
            "OPTIONS": {"application_name": "from options", "isolation_level": 1},
        })
        conn = psycopg2.connect(cnx)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT current_database(), current_setting('application_name')")
                assert cursor.fetchone() == (name, "from options")
        finally:
            conn.close()
    finally:
        db.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def test_connection_string_from_databases_like_django():
    # NAME None is Django's way of connecting to the 'postgres' database; empty values are unset.
    assert parse_dsn(database_cnx_from({"NAME": None, "USER": "", "HOST": "", "PORT": "", "OPTIONS": {}})) == {
        "dbname": "postgres"
    }
    assert parse_dsn(database_cnx_from({"NAME": "", "OPTIONS": {"service": "mysite"}})) == {"service": "mysite"}
    assert parse_dsn(database_cnx_from({"NAME": "db", "PASSWORD": "p w'd", "PORT": 5433})) == {
        "dbname": "db", "password": "p w'd", "port": "5433"
    }
    with pytest.raises(ConfigurationError, match="set FLASH_WAL\\['DATABASE_CNX'\\]"):
        database_cnx_from({"NAME": "db", "OPTIONS": {"not_a_libpq_option": "x"}})


def test_models_name_their_table_exactly():
    class Meta:
        db_table = "Blog_Post"

    class Model:
        _meta = Meta

    assert _table_name(Model) == '"Blog_Post"'
    Meta.db_table = '"archive"."posts"'
    assert _table_name(Model) == '"archive"."posts"'
    assert _table_name("blog_post") == "blog_post"
