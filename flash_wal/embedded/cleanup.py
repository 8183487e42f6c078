"""Getting rid of an embedded server: stopping it, clearing away what a dead one left
(its orphaned children, their hold on its shared memory, its stale lock files), and
removing its directories.

:func:`finalize` does all of it; ``EmbeddedPostgres.stop()`` calls it, and so does
the ``weakref.finalize`` that ``start()`` registers, which also runs at interpreter
exit: a server left running is stopped when the Python process exits normally.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import List, Set

from ..errors import FlashError
from .processes import (
    POLL_INTERVAL,
    ServerState,
    lock_file_pid,
    pid_alive,
    postmaster_pid,
    run_program,
    wait_until,
)

logger = logging.getLogger(__name__)


def server_processes(data_dir: Path, postgres: Path) -> List[int]:
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


def shm_attached(data_dir: Path) -> int:
    """How many processes are attached to the System V shared memory segment that
    ``postmaster.pid`` names (0 if none, or unknown).

    PostgreSQL refuses to start while this is not 0 ("pre-existing shared memory block
    ... is still in use"), so it is checked as well as :func:`server_processes`: it
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


def shutdown_server(state: ServerState) -> None:
    """Stop the server of ``state.data_dir`` and wait until none of its processes is left.

    A live postmaster is stopped (see :func:`stop_postmaster`). A dead one (crashed,
    SIGKILLed by someone) needs no stopping, but what it left behind must go before
    the data directory can be started again (see :func:`clear_dead_server`).
    """
    data_dir = state.data_dir
    if data_dir is None or not data_dir.exists():
        return
    pid = postmaster_pid(data_dir)
    if pid is None:
        return
    if pid_alive(pid):
        stop_postmaster(state, pid)
    clear_dead_server(state, pid)


def stop_postmaster(state: ServerState, pid: int) -> None:
    """Stop the postmaster ``pid``: ``pg_ctl stop`` fast, then immediate, then SIGKILL.

    pg_ctl only sends the signal (``-W``); we wait ourselves because pg_ctl takes a
    zombie for a running server: a postmaster SIGKILLed a moment before it is called
    would keep it waiting until a lazy init process reaps it (or its timeout).
    """
    def not_alive() -> bool:
        return not pid_alive(pid)

    for mode in ("fast", "immediate"):
        try:
            code, out, err = run_program(state, ["pg_ctl", "stop", "-D", str(state.data_dir),
                                                 "-m", mode, "-W"], timeout=30)
            outcome = f"exited {code}: {(out + err).strip()}"
        except FlashError as exc:
            code, outcome = None, str(exc)
        # Without a signal sent there is nothing to wait for: just look once.
        wait = state.stop_timeout if code == 0 else 0.0
        if wait_until(not_alive, time.monotonic() + wait):
            logger.info("PostgreSQL (pid %s) stopped", pid)
            return
        logger.warning("PostgreSQL (pid %s) still runs after pg_ctl stop -m %s (%s)",
                       pid, mode, outcome)
    logger.warning("PostgreSQL (pid %s) ignores pg_ctl stop; killing it", pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    if not wait_until(not_alive, time.monotonic() + 10):
        raise FlashError(f"PostgreSQL (pid {pid}) could not be stopped")


def clear_dead_server(state: ServerState, pid: int) -> None:
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
        leftovers = server_processes(data_dir, postgres)
        attached = shm_attached(data_dir)
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
        time.sleep(POLL_INTERVAL)
    pid_file = data_dir / "postmaster.pid"
    socket_dirs = {state.runtime_dir} if state.runtime_dir is not None else set()
    try:
        # Line 5 names the (first) socket directory, in case settings= moved it.
        socket_dirs.add(Path(pid_file.read_text().splitlines()[4].strip()))
    except (OSError, IndexError):
        pass
    locks = [lock for d in socket_dirs if d.is_absolute() for lock in d.glob(".s.PGSQL.*.lock")]
    for lock in locks + [pid_file]:
        if lock_file_pid(lock) == pid:
            logger.info("removing %s of the dead postmaster %s", lock, pid)
            try:
                lock.unlink()
            except OSError:
                pass


def remove_dirs(state: ServerState) -> None:
    """Remove the runtime directory (unix sockets, the programs' home), and the data
    directory if the server made it."""
    def on_error(func: object, path: str, exc_info: object) -> None:
        logger.warning("cannot remove %s: %s", path, exc_info)

    if state.owns_data_dir and state.data_dir is not None and state.data_dir.exists():
        shutil.rmtree(state.data_dir, onerror=on_error)
    if state.runtime_dir is not None and state.runtime_dir.exists():
        shutil.rmtree(state.runtime_dir, onerror=on_error)
    state.runtime_dir = None
    if state.owns_data_dir:
        state.data_dir = None


def finalize(state: ServerState) -> None:
    """Stop the server and remove its directories; used by stop() and at exit."""
    if os.getpid() != state.owner_pid:
        # A forked child exiting must not stop its parent's server.
        return
    try:
        shutdown_server(state)
    finally:
        remove_dirs(state)
