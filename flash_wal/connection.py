"""Opening connections the way flash_wal needs them, and showing DSNs safely."""

import re
from typing import Any, Dict, Mapping, Optional

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from .decoding import SESSION_SETTINGS
from .errors import ConfigurationError

__all__ = ["connect", "mask_dsn", "DEFAULT_CONNECT_TIMEOUT"]

#: Seconds to wait for a server before giving up, unless the DSN says otherwise.
DEFAULT_CONNECT_TIMEOUT = 10


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, fit for logs and messages."""
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    if "password" in params:
        params["password"] = "***"
    return " ".join(f"{key}={value}" for key, value in params.items())


def _session_options(existing: Optional[str], settings: Mapping[str, str]) -> str:
    pinned = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return f"{existing} {pinned}" if existing else pinned


def connection_params(dsn: str, *, replication: bool = False) -> Dict[str, Any]:
    try:
        params: Dict[str, Any] = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        raise ConfigurationError(
            f"database_cnx is not a valid connection string ({exc}); use "
            "'postgresql://user:password@host:5432/dbname' or 'host=... dbname=...'"
        ) from None
    params.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT))
    params.setdefault("application_name", "flash_wal")
    params["options"] = _session_options(params.get("options"), SESSION_SETTINGS)
    if replication:
        params.pop("replication", None)
    return params


def connect(dsn: str, *, replication: bool = False) -> Any:
    """A connection with flash_wal's session settings pinned.

    ``replication=True`` gives a ``LogicalReplicationConnection``; otherwise an
    autocommit connection for catalog queries and DDL.
    """
    params = connection_params(dsn, replication=replication)
    if replication:
        return psycopg2.connect(connection_factory=psycopg2.extras.LogicalReplicationConnection, **params)
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    return conn
