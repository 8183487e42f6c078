"""The embedded server's settings and the files they are written to.

:data:`DEFAULT_SETTINGS`, overridden one by one by ``EmbeddedPostgres(settings=...)``,
plus the port and the unix socket directory, are written at every start to
``flash_wal.conf`` in the data directory. ``postgresql.conf`` includes that file (so
``ALTER SYSTEM`` still overrides it), and ``pg_hba.conf`` gets an entry trusting
replication connections from 127.0.0.1 if it has none.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from ..errors import ConfigurationError
from .accounts import RunAs

logger = logging.getLogger(__name__)

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

CONF_FILE = "flash_wal.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_FILE}'"
HBA_REPLICATION_LINE = "host    replication     all             127.0.0.1/32            trust"
_HBA_REPLICATION = re.compile(r"^\s*host\s+replication\s+all\s+127\.0\.0\.1/32\s+trust\s*(#.*)?$", re.M)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def quote_conf(value: str) -> str:
    """Quote ``value`` for postgresql.conf (every value may be single-quoted)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def setting_value(name: str, value: object) -> str:
    """``value`` as postgresql.conf text, on a single line; ``bool`` becomes ``on``/``off``."""
    if isinstance(value, bool):
        text = "on" if value else "off"
    else:
        text = str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise ConfigurationError(f"setting {name!r}: the value must be a single line")
    return text


def checked_settings(settings: Optional[Mapping[str, object]]) -> Dict[str, str]:
    """``settings=`` as postgresql.conf texts, once every name is valid and not ``port``
    (which has its own argument, ``port=``)."""
    checked: Dict[str, str] = {}
    for name, value in (settings or {}).items():
        if not _SETTING_NAME.match(name):
            raise ConfigurationError(f"invalid setting name {name!r}")
        if name.lower() == "port":
            raise ConfigurationError("pass the port as port=, not in settings")
        checked[name] = setting_value(name, value)
    return checked


def config_lines(settings: Mapping[str, str], port: int, socket_dir: Path) -> List[str]:
    """The lines of ``flash_wal.conf``: the defaults, the socket directory, ``settings``
    over them, and the port last."""
    merged: Dict[str, str] = dict(DEFAULT_SETTINGS)
    merged["unix_socket_directories"] = str(socket_dir)
    merged.update(settings)
    merged["port"] = str(port)
    lines = ["# Written by flash_wal.embedded at every start; do not edit."]
    lines += [f"{name} = {quote_conf(value)}" for name, value in merged.items()]
    return lines


def _append_line(path: Path, text: str, line: str) -> None:
    """Append ``line`` to ``path``, whose content is ``text``, on a line of its own."""
    with open(path, "a") as fh:
        fh.write(("" if text.endswith("\n") or not text else "\n") + line + "\n")


def write_settings(data_dir: Path, lines: List[str], run_as: RunAs) -> None:
    """(Re)write flash_wal.conf, include it from postgresql.conf, check pg_hba.conf."""
    run_as.write_private_file(data_dir / CONF_FILE, "\n".join(lines) + "\n")
    main_conf = data_dir / "postgresql.conf"
    text = main_conf.read_text() if main_conf.exists() else ""
    if INCLUDE_LINE not in text:
        _append_line(main_conf, text, "\n# flash_wal.embedded settings\n" + INCLUDE_LINE)
    hba = data_dir / "pg_hba.conf"
    hba_text = hba.read_text() if hba.exists() else ""
    if not _HBA_REPLICATION.search(hba_text):
        logger.info("adding a trusted replication entry for 127.0.0.1 to %s", hba)
        _append_line(hba, hba_text, HBA_REPLICATION_LINE)
