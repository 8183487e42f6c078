"""Opening connections the way flash_wal needs them, and showing DSNs safely."""

import re
import urllib.parse
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from .decoding import SESSION_SETTINGS
from .errors import ConfigurationError, FlashError, one_line

__all__ = ["connect", "mask_dsn", "mask_secrets", "DEFAULT_CONNECT_TIMEOUT"]

#: Seconds to wait for a server before giving up, unless the DSN says otherwise.
DEFAULT_CONNECT_TIMEOUT = 10


#: What a password is replaced with in messages and logs.
MASK = "***"

_URI_PREFIX = re.compile(r"postgres(?:ql)?://", re.I)
_URI_PASSWORD_PARAMETER = re.compile(r"(?<=[?&])password=(?P<value>[^&#]*)", re.I)
# A password=value pair of a key=value DSN. An unquoted value also takes the words
# after it that are not the next keyword=, and an unterminated quote runs to the end:
# libpq rejects such strings, but they are what was meant as the password.
_KEYWORD_PASSWORD = re.compile(
    r"(?:^|(?<=\s))password\s*=\s*"
    r"(?P<value>'(?:[^'\\]|\\.)*'?"
    r"|(?:[^\s\\]|\\.)*(?:\s+(?![\w.]+\s*=)(?:[^\s\\]|\\.)+)*)",
    re.I | re.S,
)
_SECRET_PIECES = re.compile(r"[\s/@:?&=#'\\]+")
#: Pieces of a password this short are not looked for alone: they would mask words.
_MIN_PIECE = 3


def _password_spans(dsn: str) -> List[Tuple[int, int]]:
    """Where ``dsn`` may hold a password, generously: masking too much is harmless."""
    spans = []
    prefix = _URI_PREFIX.match(dsn)
    if prefix:
        # user:password@ ends at the last "@", so that a password with an unencoded
        # "@" or "/" (which libpq splits elsewhere) is still covered whole.
        at = dsn.rfind("@")
        colon = dsn.find(":", prefix.end(), max(at, 0))
        if colon != -1:
            spans.append((colon + 1, at))
        spans += [match.span("value") for match in _URI_PASSWORD_PARAMETER.finditer(dsn)]
    else:
        spans += [match.span("value") for match in _KEYWORD_PASSWORD.finditer(dsn)]
    merged: List[Tuple[int, int]] = []
    for start, end in sorted(span for span in spans if span[1] > span[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def mask_dsn(dsn: str) -> str:
    """``dsn`` as it was written (URI or key=value), with every password replaced by
    ``***``: fit for logs and messages. Works on strings libpq cannot parse, too."""
    masked, last = [], 0
    for start, end in _password_spans(dsn):
        masked += [dsn[last:start], MASK]
        last = end
    return "".join(masked) + dsn[last:]


def _secrets(dsn: str) -> List[str]:
    """The password of ``dsn`` in every form a message may quote it, longest first."""
    found: Set[str] = set()
    for start, end in _password_spans(dsn):
        written = dsn[start:end]
        found.update((written, re.sub(r"\\(.)", r"\1", written.strip("'")), urllib.parse.unquote(written)))
    pieces = {piece for secret in found for piece in _SECRET_PIECES.split(secret) if piece}
    found.update(piece for piece in pieces if len(piece) >= _MIN_PIECE)
    try:
        parsed = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error:
        parsed = {}
    # What libpq made of the password: its value or, when an unencoded "/" or "@" cut
    # it short, the port, host or dbname the rest of it became.
    found.update(value for value in parsed.values() if pieces & set(_SECRET_PIECES.split(value)))
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def mask_secrets(text: str, dsn: Optional[str]) -> str:
    """``text`` (an error message, a log line) with the password of ``dsn`` masked
    wherever it appears: libpq quotes parts of a DSN it cannot use in its errors."""
    if not dsn or not text:
        return text
    text = text.replace(dsn, mask_dsn(dsn))
    for secret in _secrets(dsn):
        text = re.sub(r"(?<![A-Za-z0-9])" + re.escape(secret) + r"(?![A-Za-z0-9])", MASK, text)
    return text


def _session_options(existing: Optional[str], settings: Mapping[str, str]) -> str:
    pinned = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return f"{existing} {pinned}" if existing else pinned


def connection_params(dsn: str, *, replication: bool = False) -> Dict[str, Any]:
    try:
        params: Dict[str, Any] = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        # libpq's reason may quote the password: kept neither as is nor as context.
        reason = mask_secrets(one_line(exc), dsn)
    else:
        params.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT))
        params.setdefault("application_name", "flash_wal")
        params["options"] = _session_options(params.get("options"), SESSION_SETTINGS)
        if replication:
            params.pop("replication", None)
        return params
    raise ConfigurationError(
        f"database_cnx is not a valid connection string ({reason}); use "
        "'postgresql://user:password@host:5432/dbname' or 'host=... dbname=...'"
    )


def connect(dsn: str, *, replication: bool = False) -> Any:
    """A connection with flash_wal's session settings pinned.

    ``replication=True`` gives a ``LogicalReplicationConnection`` (in the database's own
    encoding if that is SQL_ASCII); otherwise an autocommit connection for catalog
    queries and DDL.
    """
    params = connection_params(dsn, replication=replication)
    try:
        if replication:
            conn = psycopg2.connect(connection_factory=psycopg2.extras.LogicalReplicationConnection, **params)
            if conn.get_parameter_status("server_encoding") == "SQL_ASCII":
                # A SQL_ASCII database holds any bytes, and the server refuses to send
                # one that is not valid in the client encoding: that would stop the
                # stream for good. Asking for SQL_ASCII gets the bytes as they are.
                conn.set_client_encoding("SQL_ASCII")
            return conn
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        masked = mask_secrets(str(exc), dsn)
        if masked == str(exc):
            raise
        # libpq quoted a piece of the password (a port or host name it could not
        # use): the same error without it, raised outside this block so that the
        # original is not kept as its context either.
        error = type(exc)(masked)
    else:
        conn.autocommit = True
        return conn
    raise error


def cannot_connect(dsn: str, exc: BaseException) -> FlashError:
    """The error for a server that could not be reached, whoever tried: the DSN and
    libpq's reason with the password masked, on one line."""
    error = FlashError(
        f"cannot connect to {mask_dsn(dsn) or 'the default server'}: {mask_secrets(one_line(exc), dsn)}. "
        "Check the connection string and that the server is running"
    )
    error.__cause__ = exc
    return error
