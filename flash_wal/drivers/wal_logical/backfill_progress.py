"""Where a durable backfill's progress survives the process: one row per listener in
``flash_wal.backfill_progress``, made only when a durable backfill first runs.

The row holds the key of the last chunk whose callbacks all returned (and so whose
transaction the slot may confirm), written in the transaction that reads the next
chunk and once more when the backfill completes. After a crash the next start reads
again at most the chunks that were in flight; the slot replays their watermarks, which
no backfill of the new process owns, so they are ignored.
"""

from typing import Any, Optional, Sequence, Tuple

import attr
import psycopg2
import psycopg2.errors
from psycopg2 import sql

from ...errors import ConfigurationError, one_line

__all__ = ["Progress", "ensure_table", "load", "save", "drop_slot_progress"]

SCHEMA = "flash_wal"
TABLE = "backfill_progress"
_SCHEMA = sql.Identifier(SCHEMA)
_TABLE = sql.Identifier(SCHEMA, TABLE)


@attr.s(frozen=True, slots=True)
class Progress:
    #: The key (as text) after which reading goes on; None: from the first row.
    after_key: Optional[Tuple[Optional[str], ...]] = attr.ib()
    rows: int = attr.ib()
    completed: bool = attr.ib()


def ensure_table(cursor: Any) -> None:
    try:
        cursor.execute(sql.SQL(
            "CREATE SCHEMA IF NOT EXISTS {};"
            " CREATE TABLE IF NOT EXISTS {} ("
            "  slot text NOT NULL, listener text NOT NULL, after_key text[], rows bigint NOT NULL DEFAULT 0,"
            "  completed boolean NOT NULL DEFAULT false, updated timestamptz NOT NULL DEFAULT now(),"
            "  PRIMARY KEY (slot, listener))"
        ).format(_SCHEMA, _TABLE))
    except psycopg2.Error as exc:
        raise ConfigurationError(
            f"a durable backfill keeps its progress in {SCHEMA}.{TABLE}, which could not be created "
            f"({one_line(exc)}); GRANT CREATE ON DATABASE to this user, or create the schema {SCHEMA} "
            "with a user that may and grant this one CREATE on it"
        ) from exc


def load(cursor: Any, slot: str, listener: str) -> Optional[Progress]:
    cursor.execute(
        sql.SQL("SELECT after_key, rows, completed FROM {} WHERE slot = %s AND listener = %s").format(_TABLE),
        (slot, listener),
    )
    found = cursor.fetchone()
    if found is None:
        return None
    after_key, rows, completed = found
    return Progress(None if after_key is None else tuple(after_key), int(rows), bool(completed))


def save(cursor: Any, slot: str, listener: str, progress: Progress) -> None:
    after_key: Optional[Sequence[Optional[str]]] = None if progress.after_key is None else list(progress.after_key)
    cursor.execute(
        sql.SQL(
            "INSERT INTO {} (slot, listener, after_key, rows, completed) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (slot, listener) DO UPDATE SET after_key = EXCLUDED.after_key, rows = EXCLUDED.rows,"
            " completed = EXCLUDED.completed, updated = now()"
        ).format(_TABLE),
        (slot, listener, after_key, progress.rows, progress.completed),
    )


def drop_slot_progress(cursor: Any, slot: str) -> None:
    """Forget the backfills of ``slot``; the table and schema go once nothing is left."""
    cursor.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{TABLE}",))
    if not cursor.fetchone()[0]:
        return
    cursor.execute(sql.SQL("DELETE FROM {} WHERE slot = %s").format(_TABLE), (slot,))
    cursor.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(_TABLE))
    if cursor.fetchone()[0]:
        cursor.execute(sql.SQL("DROP TABLE {}").format(_TABLE))
        try:
            cursor.execute(sql.SQL("DROP SCHEMA {}").format(_SCHEMA))  # only if empty: never CASCADE
        except psycopg2.errors.DependentObjectsStillExist:
            pass
