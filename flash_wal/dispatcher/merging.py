"""Backfills on the dispatcher's side: the changes their chunks must know about, and
the chunks' rows delivered as ReadEvents where the stream reaches their watermarks
(see :mod:`flash_wal.backfill` for the method)."""

from typing import Any, Callable, Dict, Optional, Tuple

from ..backfill import Merge, parse_chunk_message
from ..events import MessageEvent, ReadEvent
from ..operations import Operation
from ..table_name import TableName
from .acknowledgement import Transaction
from .routes import Route

__all__ = ["Merges"]

READ = Operation.READ

Deliver = Callable[[Route, Transaction, Any], None]


class Merges:
    """The running backfills, by table (for the changes) and by token (for the
    watermarks). The maps are replaced whole, under the dispatcher's lock, so the
    replication thread reads them without one."""

    def __init__(self) -> None:
        self.by_table: Dict[TableName, Tuple[Tuple[Merge, Route], ...]] = {}
        self._by_token: Dict[str, Tuple[Merge, Route]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_token)

    def add(self, merge: Merge, route: Route) -> None:
        by_token = dict(self._by_token)
        by_token[merge.token] = (merge, route)
        self._publish(by_token)

    def remove(self, merge: Merge) -> None:
        by_token = dict(self._by_token)
        by_token.pop(merge.token, None)
        self._publish(by_token)

    def _publish(self, by_token: Dict[str, Tuple[Merge, Route]]) -> None:
        by_table: Dict[TableName, Tuple[Tuple[Merge, Route], ...]] = {}
        for merge, route in by_token.values():
            by_table[route.listener.table] = by_table.get(route.listener.table, ()) + ((merge, route),)
        self._by_token, self.by_table = by_token, by_table

    # --- the replication thread -------------------------------------------------------

    def note_change(self, table: TableName, txn: Transaction, old: Optional[Dict[str, Any]],
                    new: Optional[Dict[str, Any]]) -> None:
        for merge, _route in self.by_table.get(table, ()):
            merge.note_change(txn.xid, old, new)

    def note_truncate(self, table: TableName, txn: Transaction) -> None:
        for merge, _route in self.by_table.get(table, ()):
            merge.note_truncate(txn.xid)

    def watermark(self, txn: Transaction, event: MessageEvent, deliver: Deliver, closing: bool) -> None:
        """A chunk's watermark: its rows that still hold their state here, as ReadEvents
        of this transaction (so they are acknowledged with it)."""
        parsed = parse_chunk_message(event.content)
        found = None if parsed is None else self._by_token.get(parsed[0])
        if found is None:
            return  # another client's, or a backfill that ended
        merge, route = found
        key_of = merge.key_of
        chunk = merge.take(parsed[1])  # type: ignore[index]
        if chunk is None:
            return
        if closing or not route.active:
            if closing:
                txn.cut_short = True  # not delivered: the chunk is read again next time
            merge.merged(chunk, txn, 0)
            return
        wanted = route.listener.callbacks_for(READ)
        delivered = 0
        table, lsn, commit_lsn = route.table_text, event.lsn, txn.commit_lsn
        for row in chunk.rows:
            if route.conditions and not route.matches(row):
                continue
            if wanted:
                deliver(route, txn, ReadEvent(table=table, lsn=lsn, commit_lsn=commit_lsn, new=route.project(row),
                                              key=key_of(row)))
            delivered += 1
        merge.merged(chunk, txn, delivered)
