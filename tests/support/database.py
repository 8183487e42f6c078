"""The test's own connection to the server, and what tests read from the server."""

from typing import Any, List, Optional

import psycopg2

from .waiting import wait_for

__all__ = ["Database", "SECRET", "confirmed_flush", "wait_for_status_updates"]

SECRET = "s3cr3t-Pw"


class Database:
    """An autocommit connection for the test's own SQL."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def execute(self, query: Any, params: Any = None) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(query, params)

    def fetchall(self, query: Any, params: Any = None) -> List[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()

    def fetchone(self, query: Any, params: Any = None) -> Optional[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchone()

    def slots(self, name: str) -> List[tuple]:
        return self.fetchall("SELECT slot_name, active FROM pg_replication_slots WHERE slot_name = %s", (name,))

    def terminate_walsender(self, slot: str) -> None:
        """End the walsender serving ``slot`` (waiting until one does), as a lost connection would."""
        query = "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s"
        pid = wait_for(lambda: (self.fetchone(query, (slot,)) or (None,))[0], what=f"a walsender on {slot}")
        self.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def streams(self, slot: str) -> bool:
        """Whether a walsender streams from ``slot``: what is committed from now on reaches it."""
        return self.fetchone(
            "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid"
            " WHERE s.slot_name = %s AND r.state = 'streaming'", (slot,)
        ) is not None

    def publications(self, prefix: str) -> List[str]:
        return [row[0] for row in self.fetchall(
            "SELECT pubname FROM pg_publication WHERE starts_with(pubname, %s) ORDER BY 1", (prefix,)
        )]

    def close(self) -> None:
        self.conn.close()


def confirmed_flush(db: Database, slot: str) -> int:
    """What the server says the slot's client confirmed, as an integer LSN."""
    row = db.fetchone(
        "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    assert row is not None, f"no slot {slot}"
    return int(row[0])


def wait_for_status_updates(db: Database, slot: str, count: int = 2) -> None:
    """Wait for ``count`` status updates from the slot's client: it had its chances to
    confirm what it was going to confirm."""
    for _ in range(count):
        row = db.fetchone("SELECT clock_timestamp()")
        assert row is not None
        now = row[0]
        wait_for(lambda: db.fetchone(
            "SELECT r.reply_time > %s FROM pg_stat_replication r JOIN pg_replication_slots s"
            " ON s.active_pid = r.pid WHERE s.slot_name = %s", (now, slot)) == (True,),
            what="a standby status update")
