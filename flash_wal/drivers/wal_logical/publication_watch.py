"""The publication as the driver left it, and what changed behind its back.

A listened table dropped or renamed is not an error: its listeners are detached. A
table taken out of the publication by someone else is: the server skipped its changes
without a word. A dropped publication is made again at once (nothing is lost if
nothing changed in between; the server says so in the session if something did).
"""

import logging
from typing import Any, Dict, Mapping, Optional, Set

from ...errors import ReplicationError
from ...table_name import TableName
from . import catalog
from .ownership import PublicationOwner

__all__ = ["PublicationWatch"]

logger = logging.getLogger(__name__)


class PublicationWatch:
    def __init__(self, name: str, owner: PublicationOwner) -> None:
        #: The publication's name: the configuration's, or the old name of a resumed
        #: durable slot's publication.
        self.name = name
        self._owner = owner
        self.server_version = 0
        self.tables: Set[TableName] = set()
        self._table_oids: Dict[TableName, int] = {}  # of self.tables, to tell a rename
        self._seen: Optional[catalog.PublicationState] = None

    def record(self, cursor: Any, infos: Mapping[TableName, catalog.TableInfo]) -> None:
        """The publication now holds exactly these tables, by this driver's doing."""
        self.tables = set(infos)
        self._table_oids = {table: info.oid for table, info in infos.items()}
        self._seen = catalog.publication_state(cursor, self.name)

    def check(self, cursor: Any) -> Set[TableName]:
        """Look at the publication; return the listened tables that are gone (dropped
        or renamed), and raise ReplicationError for a table someone took out of it."""
        gone = self._forget_gone_tables(cursor)
        state = catalog.publication_state(cursor, self.name)  # without them by now
        if state is None:
            logger.warning("publication %r no longer exists; creating it again", self.name)
            catalog.create_publication(cursor, self.name, self.tables, self.server_version, self._owner)
            self._seen = catalog.publication_state(cursor, self.name)
        elif state != self._seen:
            self._check_tables_kept(state)
            self._seen = state
        return gone

    def _forget_gone_tables(self, cursor: Any) -> Set[TableName]:
        """Stop publishing tables that were dropped or renamed; return them."""
        current = catalog.table_names(cursor, self._table_oids.values())
        gone = {table for table, oid in self._table_oids.items() if current.get(oid) != table}
        renamed = [current[self._table_oids[table]] for table in gone if self._table_oids[table] in current]
        if renamed and catalog.publication_state(cursor, self.name) is not None:
            catalog.alter_publication(cursor, self.name, add=(), drop=renamed)
        self.tables -= gone
        for table in gone:
            del self._table_oids[table]
        return gone

    def _check_tables_kept(self, state: catalog.PublicationState) -> None:
        removed = sorted(str(table) for table, oid in self._table_oids.items() if oid not in state.relids)
        if removed:
            raise ReplicationError(
                f"table {', '.join(removed)} was removed from publication {self.name!r} "
                "by someone else while the client streamed: the server skipped its changes from then on, "
                "and cannot send them again (it decodes each change with the publication as it was then). "
                "Leave flash_wal's publications to flash_wal, and start the client again; the changes made "
                "to that table meanwhile are missing"
            )
