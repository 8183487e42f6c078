"""The embedded server's processes: running its programs as the server user, and
telling whether its postmaster is alive.

:class:`ServerState` is what a running server is made of (its binaries, user and
directories). :class:`~flash_wal.embedded.EmbeddedPostgres` keeps one, and hands
the same one to its finalizer (:func:`flash_wal.embedded.cleanup.finalize`), which
must not hold a reference to the server itself.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import FlashError
from .accounts import RunAs

logger = logging.getLogger(__name__)

#: Seconds between two looks while waiting for processes or a port.
POLL_INTERVAL = 0.05


class ServerState:
    """What the finalizer needs to shut a server down; holds no reference to it."""

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.bin_dir: Optional[Path] = None
        self.run_as: Optional[RunAs] = None
        self.runtime_dir: Optional[Path] = None
        self.data_dir: Optional[Path] = None
        self.owns_data_dir = False
        self.env: Dict[str, str] = {}
        self.stop_timeout = 30.0


def run_program(state: ServerState, args: List[str], timeout: float) -> Tuple[int, str, str]:
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
            code: Optional[int] = proc.returncode
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


def wait_until(done: Callable[[], bool], deadline: float) -> bool:
    """Poll ``done()`` until it is true (-> True) or ``deadline`` has passed (-> False)."""
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` lives (a zombie does not)."""
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


def lock_file_pid(path: Path) -> Optional[int]:
    """The pid a PostgreSQL lock file (``postmaster.pid``, ``.s.PGSQL.<port>.lock``) names."""
    try:
        return int(path.read_text().splitlines()[0].strip())
    except (OSError, IndexError, ValueError):
        return None


def postmaster_pid(data_dir: Path) -> Optional[int]:
    """The pid ``postmaster.pid`` of ``data_dir`` names (alive or not)."""
    return lock_file_pid(data_dir / "postmaster.pid")
