"""The demo's writer: on its own connection, a short scenario (inserts, updates,
deletes, a TRUNCATE), each step announced before its events, then one change per
interval until it is stopped."""

import threading
from decimal import Decimal
from typing import Any, List, Optional

import psycopg2
from psycopg2 import sql

from ..connection import cannot_connect
from ..errors import FlashError, one_line
from .demo_output import Printer

__all__ = ["Writer", "TABLE_COLUMNS", "STEP_PAUSE"]

#: The demo table: the columns the writer fills, of types that show how values arrive.
TABLE_COLUMNS = """
    id bigserial PRIMARY KEY,
    title text NOT NULL,
    status text,
    views int DEFAULT 0,
    price numeric(10,2),
    tags text[],
    meta jsonb,
    published_at timestamptz
"""
#: Seconds between the steps of the opening scenario.
STEP_PAUSE = 0.35


class _Halted(Exception):
    """The writer was asked to stop."""


class Writer(threading.Thread):
    """Writes the scenario, then one change per interval, on its own connection."""

    def __init__(self, dsn: str, table: sql.Composable, printer: Printer, interval: float,
                 pause: float = STEP_PAUSE) -> None:
        super().__init__(name="flash-wal-demo-writer", daemon=True)
        self.dsn = dsn
        self.table = table
        self.printer = printer
        self.interval = interval
        self.pause = pause
        #: Events the changes written so far must produce (one per row; one per TRUNCATE).
        self.expected = 0
        self.error: Optional[FlashError] = None
        self._stopping = threading.Event()
        self._cursor: Any = None
        self._posts = 0

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=10, application_name="flash_wal_demo_writer")
        except psycopg2.Error as exc:
            self.error = cannot_connect(self.dsn, exc)
            return
        try:
            conn.autocommit = True
            self._cursor = conn.cursor()
            self._scenario()
            self._keep_writing()
        except _Halted:
            pass
        except psycopg2.Error as exc:
            self.error = FlashError(f"the demo writer failed: {one_line(exc)}")
        finally:
            conn.close()

    # The opening scenario: each step says what it does, then its events follow.

    def _scenario(self) -> None:
        t = self.table
        (first,) = self._step(
            "insert a post",
            sql.SQL("INSERT INTO {} (title, status, price, tags, meta) VALUES "
                    "('Hello, flash_wal', 'draft', 9.99, ARRAY['intro', 'python'], "
                    """'{{"lang": "en"}}') RETURNING id""").format(t),
        )
        second, third = self._step(
            "insert two posts in one transaction (one xid)",
            sql.SQL("INSERT INTO {} (title, status, views, price, tags, meta) VALUES "
                    "('Logical replication 101', 'draft', 3, 19.50, ARRAY['postgres'], "
                    """'{{"level": 2}}'), """
                    "('Scratch notes', NULL, NULL, NULL, NULL, NULL) RETURNING id").format(t),
        )
        self._step(f"count a view of post {first}",
                   sql.SQL("UPDATE {} SET views = views + 1 WHERE id = %s").format(t), (first,))
        self._step(f"publish post {first}: its status changes",
                   sql.SQL("UPDATE {} SET status = 'published', published_at = date_trunc('second', now()) "
                           "WHERE id = %s").format(t), (first,))
        self._step(f"reprice and retag post {second}",
                   sql.SQL("UPDATE {} SET price = 24.00, tags = array_append(tags, 'wal'), "
                           """meta = meta || '{{"level": 3}}' WHERE id = %s""").format(t), (second,))
        self._step(f"delete post {third}", sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (third,))
        self._step("truncate the table, restarting its id sequence",
                   sql.SQL("TRUNCATE {} RESTART IDENTITY").format(t), rows=1)
        self.printer.line(f"-- scenario done; from now on one change every {self.interval:g} s")

    def _step(self, note: str, query: sql.Composable, params: Any = None, rows: Optional[int] = None) -> List[Any]:
        if self._stopping.is_set():
            raise _Halted()
        self.printer.line(f"-- {note}")
        result = self._execute(query, params, rows)
        if self._stopping.wait(self.pause):
            raise _Halted()
        return result

    def _execute(self, query: sql.Composable, params: Any = None, rows: Optional[int] = None) -> List[Any]:
        cursor = self._cursor
        cursor.execute(query, params)
        self.expected += rows if rows is not None else max(cursor.rowcount, 0)
        return [row[0] for row in cursor.fetchall()] if cursor.description else []

    # Then one change per interval, in a cycle: insert a post, count views of the
    # newest, publish it, and delete the oldest once there are a few (else insert).

    def _keep_writing(self) -> None:
        t = self.table
        step = 0
        while not self._stopping.wait(self.interval):
            step += 1
            phase = step % 4
            if phase == 2:
                self._execute(sql.SQL("UPDATE {} SET views = views + %s WHERE id = "
                                      "(SELECT max(id) FROM {})").format(t, t), (step % 7 + 1,))
            elif phase == 3:
                self._execute(sql.SQL("UPDATE {} SET status = 'published', "
                                      "published_at = date_trunc('second', now()) "
                                      "WHERE id = (SELECT max(id) FROM {})").format(t, t))
            elif phase == 0 and self._execute(sql.SQL("SELECT count(*) FROM {}").format(t), rows=0)[0] >= 3:
                self._execute(sql.SQL("DELETE FROM {} WHERE id = (SELECT min(id) FROM {})").format(t, t))
            else:
                self._posts += 1
                n = self._posts
                self._execute(
                    sql.SQL("INSERT INTO {} (title, status, price, tags, meta) VALUES "
                            "(%s, 'draft', %s, %s, %s::jsonb)").format(t),
                    (f"Live post {n}", Decimal(n * 125) / 100 + Decimal("0.99"),
                     ["live", f"n{n}"], f'{{"n": {n}}}'),
                )
