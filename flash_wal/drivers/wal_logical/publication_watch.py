"""The publications as the driver left them, and what changed behind its back.

A listened table dropped or renamed is not an error: its listeners are detached. A
table taken out of a publication by someone else is: the server skipped its changes
without a word. A dropped publication is made again at once (nothing is lost if
nothing changed in between; the server says so in the session if something did).
"""

import logging
from typing import Any, Dict, List, Mapping, Optional, Set

from ...errors import ReplicationError
from ...operations import Operation
from ...table_name import TableName
from . import catalog
from .ownership import PublicationOwner
from .publications import publication_contents, publish_option

__all__ = ["Filters", "PublicationWatch"]

#: Publication name -> table -> its row filter, as SQL text.
Filters = Mapping[str, Mapping[TableName, str]]

logger = logging.getLogger(__name__)


class PublicationWatch:
    def __init__(self, publications: Mapping[str, Operation], owner: PublicationOwner) -> None:
        #: Each publication's name and the operations it publishes: one per operation,
        #: or the one publication of a resumed durable slot made by an earlier version.
        self.publications: Dict[str, Operation] = dict(publications)
        self._owner = owner
        self.server_version = 0
        #: Every listened table, published or not (a listener may have no callback yet).
        self.tables: Set[TableName] = set()
        self.needed: Dict[TableName, Operation] = {}  # the operations each table needs
        self._table_oids: Dict[TableName, int] = {}  # of self.tables, to tell a rename
        self._seen: Dict[str, Optional[catalog.PublicationState]] = {}
        #: The row filter of each filtered table in each publication, as SQL text.
        self.filters: Dict[str, Dict[TableName, str]] = {}

    @property
    def names(self) -> List[str]:
        return sorted(self.publications)

    def contents(self) -> Dict[str, Set[TableName]]:
        """The tables each publication holds, by this driver's doing."""
        return publication_contents(self.publications, self.needed)

    def create(self, cursor: Any, needed: Mapping[TableName, Operation]) -> None:
        """Create every publication afresh, together, holding the tables that need its operations."""
        contents = publication_contents(self.publications, needed)
        with catalog.transaction(cursor):
            for name, operations in self.publications.items():
                catalog.create_publication(
                    cursor, name, contents[name], self.server_version, self._owner, publish_option(operations)
                )

    def move(
        self, cursor: Any, needed: Mapping[TableName, Operation], filters: Filters = {},
        current: Optional[Mapping[str, Set[TableName]]] = None, current_filters: Filters = {},
    ) -> None:
        """Alter the publications from what they hold (``current`` with its filters, or
        as last recorded) to what ``needed`` and ``filters`` ask, in one transaction: a
        table moving from one set of operations to another is never published by
        neither, and tables that stay with the same filter are not touched (one whose
        filter changes is dropped and added again, in the same transaction)."""
        before = self.contents() if current is None else current
        before_filters = self.filters if current is None else current_filters
        after = publication_contents(self.publications, needed)
        with catalog.transaction(cursor):
            for name in self.names:
                held, wanted = before.get(name, set()), after[name]
                old, new = before_filters.get(name, {}), filters.get(name, {})
                refiltered = {table for table in held & wanted if old.get(table) != new.get(table)}
                catalog.alter_publication(
                    cursor, name, add=(wanted - held) | refiltered, drop=(held - wanted) | refiltered, filters=new
                )

    def record(
        self, cursor: Any, infos: Mapping[TableName, catalog.TableInfo], needed: Mapping[TableName, Operation],
        filters: Filters = {},
    ) -> None:
        """The publications now hold exactly what ``needed`` and ``filters`` ask for these tables."""
        self.filters = {name: dict(tables) for name, tables in filters.items()}
        self.tables = set(infos)
        self.needed = {table: needed.get(table, Operation(0)) for table in infos}
        self._table_oids = {table: info.oid for table, info in infos.items()}
        self._seen = {name: catalog.publication_state(cursor, name) for name in self.publications}

    def check(self, cursor: Any) -> Set[TableName]:
        """Look at the publications; return the listened tables that are gone (dropped
        or renamed), and raise ReplicationError for a table someone took out of one."""
        gone = self._forget_gone_tables(cursor)
        contents = self.contents()
        for name, operations in self.publications.items():
            state = catalog.publication_state(cursor, name)  # without the gone tables by now
            if state is None:
                logger.warning("publication %r no longer exists; creating it again", name)
                catalog.create_publication(
                    cursor, name, contents[name], self.server_version, self._owner, publish_option(operations),
                    self.filters.get(name, {}),
                )
                self._seen[name] = catalog.publication_state(cursor, name)
            elif state != self._seen.get(name):
                self._check_tables_kept(name, state, contents[name])
                self._seen[name] = state
        return gone

    def _forget_gone_tables(self, cursor: Any) -> Set[TableName]:
        """Stop publishing tables that were dropped or renamed; return them."""
        current = catalog.table_names(cursor, self._table_oids.values())
        gone = {table for table, oid in self._table_oids.items() if current.get(oid) != table}
        if not gone:
            return gone
        for name, tables in self.contents().items():
            renamed = [current[self._table_oids[table]] for table in gone & tables if self._table_oids[table] in current]
            if renamed and catalog.publication_state(cursor, name) is not None:
                catalog.alter_publication(cursor, name, add=(), drop=renamed)
        self.tables -= gone
        for table in gone:
            del self._table_oids[table]
            self.needed.pop(table, None)
            for filtered in self.filters.values():
                filtered.pop(table, None)
        return gone

    def _check_tables_kept(self, name: str, state: catalog.PublicationState, expected: Set[TableName]) -> None:
        removed = sorted(str(table) for table in expected if self._table_oids[table] not in state.relids)
        if removed:
            raise ReplicationError(
                f"table {', '.join(removed)} was removed from publication {name!r} "
                "by someone else while the client streamed: the server skipped its changes from then on, "
                "and cannot send them again (it decodes each change with the publication as it was then). "
                "Leave flash_wal's publications to flash_wal, and start the client again; the changes made "
                "to that table meanwhile are missing"
            )
