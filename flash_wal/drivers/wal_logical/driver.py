"""The wal_logical driver: server set-up and the calls the client makes.

It composes the parts that do the work: :mod:`.config` (the settings),
:mod:`.query_connection` (the normal connection and the slot's lock),
:mod:`.publication_watch` (the publication as it was left), :mod:`.replication`
(the thread that owns the replication connection), and the SQL of :mod:`.catalog`,
:mod:`.claim`, :mod:`.identity` and :mod:`.ownership`.
"""

import logging
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import psycopg2
import psycopg2.errorcodes

from ...connection import connect, mask_dsn
from ...errors import ConfigurationError, FlashError, SlotInUseError, one_line
from ...conditions import Condition
from ...listener import Listener
from ...operations import Operation
from ...table_name import TableName
from ...validators import config_from
from .. import base
from . import catalog, claim, column_types, identity, keys, ownership, publications, removal, row_filters
from .backfill_reader import BackfillReader, start_reader
from .config import DriverConfig
from .publication_watch import PublicationWatch
from .query_connection import QueryConnection, connect_for_setup
from .replication import ReplicationThread

__all__ = ["Driver", "DriverConfig"]

logger = logging.getLogger(__name__)


class Driver(base.Driver):
    """Logical replication with pgoutput. ``Driver()`` uses every default."""

    def __init__(self, config: Optional[DriverConfig] = None, **kwargs: Any) -> None:
        self.config = config = config_from(DriverConfig, config, kwargs)
        self._query: Optional[QueryConnection] = None  # made by start(), with the DSN it is given
        self._thread: Optional[ReplicationThread] = None
        self._on_tables_gone: Callable[[Iterable[TableName]], None] = lambda tables: None
        self._owner = ownership.PublicationOwner(
            prefix=config.publication_slot_prefix, slot=config.replication_slot, durable=config.durable
        )
        per_operation = ownership.operation_publication_names(config.publication_slot_prefix, config.replication_slot)
        self._watch = PublicationWatch({name: op for op, name in per_operation.items()}, self._owner)
        self._on_fatal: Optional[Callable[[BaseException], None]] = None
        self.server_version = 0
        self.protocol_version = 0
        #: The listeners whose conditions are typed: attach types only the new ones.
        self._typed: Set[Listener] = set()
        self._told_no_filters = False
        self._warned_stale = False  # see listen()
        self._backfills: List[BackfillReader] = []
        self._connect: Callable[[], Any] = lambda: None  # a normal connection, once started
        self._sink: Optional[base.Sink] = None

    # --- base.Driver ------------------------------------------------------------------

    def start(
        self,
        database_cnx: str,
        sink: base.Sink,
        listeners: Sequence[Listener],
        *,
        shutdown_timeout: float,
        on_fatal: Callable[[BaseException], None],
        on_tables_gone: Callable[[Iterable[TableName]], None] = lambda tables: None,
    ) -> None:
        if self._query is not None:
            raise FlashError("this Driver has already been started; give each Client its own Driver")
        self._query = query = QueryConnection(database_cnx, self.config, self._slot_lost)
        self._connect = lambda: connect(database_cnx)
        self._sink = sink
        self._on_fatal = on_fatal
        config = self.config
        published = False
        slot_existed = True  # until we know the slot is ours to create (and to drop on failure)
        identities_before: Optional[List[identity.ReplicaIdentity]] = None
        try:
            cursor = query.open()
            self.server_version = catalog.server_version(cursor)
            self.protocol_version = catalog.protocol_version_for(self.server_version)
            catalog.check_server(cursor, config.replication_slot)
            if config.use_streaming and self.server_version < 140000:
                raise ConfigurationError("use_streaming=True needs PostgreSQL 14 or later; set it to False")
            if sink.wants_messages and self.server_version < 140000:
                raise ConfigurationError("on_message needs PostgreSQL 14 or later (pgoutput's messages option)")
            infos = self._describe(cursor, listeners)
            sink.conditions_typed(listeners)  # before the first change reaches it
            install_trigger = identity.check_replica_identities(
                cursor, infos.values(), full=config.replica_identity_full, server_version=self.server_version
            )
            slot_existed = claim.claim_slot(cursor, config)
            current: Dict[str, Optional[Set[TableName]]] = {}
            watch = self._watch
            watch.server_version = self.server_version
            if slot_existed:
                watch.publications, current = claim.resumed_publications(cursor, config)
            needed = publications.needed_operations(listeners)
            if any(tables is not None for tables in current.values()):
                # Resuming: the slot's WAL is decoded with the publications as they were
                # then, so they are altered, never replaced.
                self._resume_publications(cursor, current, needed)
            else:
                self._create_publications(cursor, needed)
                published = True
            identities_before = identity.replica_identities(cursor, (info.oid for info in infos.values()))
            self._set_identities(cursor, infos.values(), install_trigger)
            watch.record(cursor, infos, needed)
            # Only now: a filter may use only columns of the replica identity just set.
            filters = self._row_filters(cursor, infos, listeners)
            if filters:
                watch.move(cursor, needed, filters)
                watch.record(cursor, infos, needed, filters)
            self._on_tables_gone = on_tables_gone
            self._thread = ReplicationThread(
                connect=lambda replication: connect(database_cnx, replication=replication),
                slot=config.replication_slot,
                publications=watch.names,
                create_slot=None if slot_existed else ("persistent" if config.durable else "temporary"),
                plugin_options=self._plugin_options(),
                protocol_version=self.protocol_version,
                sink=sink,
                status_interval=config.status_interval,
                shutdown_timeout=shutdown_timeout,
                setup_timeout=config.setup_timeout,
                stream_buffer_bytes=config.stream_buffer_bytes,
                reconnect_delay=(config.reconnect_delay, config.reconnect_max_delay),
                before_reconnect=self._restore_publication,
                check_publication=self._check_publication,
                on_fatal=on_fatal,
            )
            self._thread.start_session(timeout=config.setup_timeout)
            logger.info(
                "streaming from %s: tables %s, %s slot %s, publications %s, pgoutput protocol %d",
                mask_dsn(database_cnx), ", ".join(sorted(map(str, infos))) or "(none yet)",
                ("resumed durable" if slot_existed else "durable") if config.durable else "temporary",
                config.replication_slot, self._publications_shown(), self.protocol_version,
            )
        except BaseException as exc:
            self._clean_up_failed_start(published, drop_slot=not slot_existed, identities=identities_before)
            error = _as_setup_error(exc, config.setup_timeout)
            if error is exc:
                raise
            raise error from exc

    def listen(self, listeners: Sequence[Listener]) -> int:
        query, watch = self._started(), self._watch
        if not self._warned_stale and publications.stale_after_alter(self.server_version):
            # Said once, when it first matters: only a change of listeners while
            # streaming alters the publications under a running session.
            self._warned_stale = True
            logger.warning(
                "PostgreSQL %d may decode changes committed after an ALTER PUBLICATION with the publication as "
                "it was, while other transactions run (seen on 16.2): listeners attached, detached or given new "
                "operations while streaming may miss their first changes; a later minor release of the server "
                "avoids it", self.server_version)
        with query.lock:
            cursor = query.cursor()
            try:
                infos = self._describe(cursor, listeners)
                wanted = set(infos)
                added = wanted - watch.tables
                new_infos = [infos[t] for t in added]
                install_trigger = identity.check_replica_identities(
                    cursor, new_infos, full=self.config.replica_identity_full, server_version=self.server_version
                )
                self._set_identities(cursor, new_infos, install_trigger)
                needed = publications.needed_operations(listeners)
                filters = self._row_filters(cursor, infos, listeners)
                watch.move(cursor, needed, filters)
                logger.debug("published now: %s", ", ".join(
                    f"{table} ({needed[table]})" for table in sorted(needed, key=str)) or "no table")
                watch.record(cursor, infos, needed, filters)
                return catalog.current_wal_lsn(cursor)
            except psycopg2.Error as exc:
                raise _as_setup_error(exc, self.config.setup_timeout) from exc

    def backfill(self, listener: Listener, backfill: Any, ordinal: int) -> None:
        if self._sink is None or self._thread is None:
            raise FlashError("the driver has not been started")
        reader = start_reader(self._connect, listener, backfill, self._sink, server_version=self.server_version,
                              durable_slot=self.config.replication_slot if self.config.durable else None,
                              ordinal=ordinal)
        self._backfills = [r for r in self._backfills if r.backfill.state == "running"] + [reader]

    def close(self) -> bool:
        drained = True
        for reader in self._backfills:
            reader.stop()
        for reader in self._backfills:
            reader.join(self.config.setup_timeout)
        thread = self._thread
        if thread is not None:
            thread.stop()
            thread.join()
            drained = thread.drained
        query = self._query
        if query is None:
            return drained
        with query.lock:
            if query.lost_slot is not None:
                logger.info("left slot %s and publications %s to the instance that took the slot",
                            self.config.replication_slot, ", ".join(self._watch.names))
            elif query.is_open:
                try:
                    if not self.config.durable:
                        self._remove_server_objects()
                        logger.debug("removed publications %s and slot %s", ", ".join(self._watch.names),
                                     self.config.replication_slot)
                    else:
                        logger.debug("kept the durable slot %s and publications %s",
                                     self.config.replication_slot, ", ".join(self._watch.names))
                finally:
                    query.close()
        return drained

    def drop(self, database_cnx: str) -> None:
        """Remove this configuration's slot and publications from the server.

        For a durable driver that no client runs any more: what the slot kept is gone.
        A slot of another plugin, database or kind, or a publication flash_wal did not
        make for this configuration, is a ConfigurationError, and nothing is dropped.
        The one publication of an earlier version (``<prefix>-<slot>``) is dropped too,
        and one with the old name ``<prefix>_<slot>`` unless another existing slot's
        name could have made it (see ``ownership``).
        """
        if self._thread is not None and self._thread.is_alive():
            raise FlashError("close the client before dropping its slot")
        removal.drop_configuration(self.config, database_cnx)

    def stop_soon(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    def stats(self) -> Dict[str, Any]:
        figures: Dict[str, Any] = {"lag_bytes": self._lag_bytes()}
        if self._thread is not None:
            figures["bytes_received"] = self._thread.received.bytes
            figures["frames_received"] = self._thread.received.frames
            figures["reconnects"] = self._thread.reconnects
            if self._thread.reconnecting:
                figures["state"] = "reconnecting"
        return figures

    # --- helpers ----------------------------------------------------------------------

    def _started(self) -> QueryConnection:
        if self._query is None:
            raise FlashError("the driver has not been started")
        return self._query

    def _lag_bytes(self) -> Optional[int]:
        # Unknown at once, rather than known late, while attach or a check runs.
        with self._started().when_free(timeout=0.5) as cursor:
            if cursor is not None:
                cursor.execute(
                    "SELECT (pg_catalog.pg_current_wal_lsn() - confirmed_flush_lsn)::int8"
                    " FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                    (self.config.replication_slot,),
                )
                row = cursor.fetchone()
                return None if row is None else row[0]
        return None

    def _check_publication(self) -> None:
        """Called by the replication thread every status_interval: see
        :mod:`.publication_watch`. Skipped when the server cannot be asked now."""
        gone: Set[TableName] = set()
        with self._started().when_free(timeout=1.0) as cursor:
            if cursor is None:
                return
            gone = self._watch.check(cursor)
        for table in sorted(gone, key=str):
            logger.warning("table %s was dropped or renamed; its listeners are detached", table)
        if gone:
            # Not from the replication thread: detaching waits for running callbacks.
            threading.Thread(target=self._on_tables_gone, args=(gone,), name="flash_wal-detach", daemon=True).start()

    def _restore_publication(self) -> None:
        """Before a reconnection attempt: the server may have restarted (the query
        connection is opened again, with the slot's lock) and the publication may have
        been changed."""
        query = self._started()
        with query.lock:
            query.cursor()
        self._check_publication()

    def _slot_lost(self, error: SlotInUseError) -> None:
        if self._thread is not None:
            self._thread.stop()
            if self._thread is not threading.current_thread() and self._on_fatal is not None:
                self._on_fatal(error)  # the replication thread reports what it raises itself

    def _set_identities(self, cursor: Any, infos: Iterable[catalog.TableInfo], install_trigger: bool) -> None:
        """What check_replica_identities found writes need: the event trigger for future
        partitions first (so none is created unseen meanwhile), then FULL on every table
        and partition if configured."""
        if install_trigger:
            identity.install_partition_identity_trigger(cursor)
        if self.config.replica_identity_full:
            identity.set_replica_identity_full(cursor, infos, self.server_version)

    def _describe(self, cursor: Any, listeners: Sequence[Listener]) -> Dict[TableName, catalog.TableInfo]:
        """The listened tables, once the listeners' columns are checked and the values
        of new listeners' conditions typed (see :mod:`.column_types`)."""
        infos = catalog.describe_tables(cursor, (listener.table for listener in listeners))
        table_keys = keys.describe_keys(cursor, infos.values())
        untyped: Dict[TableName, List[Listener]] = {}
        for listener in listeners:
            catalog.check_listener_columns(listener, infos[listener.table])
            keys.check_listener_key(
                listener, infos[listener.table], table_keys[listener.table], self.config.replica_identity_full
            )
            if listener not in self._typed:
                untyped.setdefault(listener.table, []).append(listener)
        typed: Dict[Listener, Tuple[Condition, ...]] = {}
        for table, new_listeners in untyped.items():
            typed.update(column_types.type_conditions(cursor, infos[table], new_listeners))
        # Only once every listener passed: a failed attach leaves the others as they were.
        for listener, conditions in typed.items():
            listener.conditions = conditions
        self._typed = set(listeners)
        return infos

    def _publications_shown(self) -> str:
        if set(self._watch.names) == set(self.config.publication_names):
            return f"{self.config.publication_name}-{{{','.join(ownership.OPERATION_SUFFIXES.values())}}}"
        return ", ".join(self._watch.names)

    def _row_filters(
        self, cursor: Any, infos: Dict[TableName, catalog.TableInfo], listeners: Sequence[Listener],
    ) -> Dict[str, Dict[TableName, str]]:
        """The row filters of the publications' tables; none unless server_filters."""
        if not self.config.server_filters:
            return {}
        if self.server_version < 150000:
            if not self._told_no_filters:
                self._told_no_filters = True
                logger.info("server_filters=True is ignored: row filters need PostgreSQL 15 or later (this is %d); "
                            "the client applies the listeners' conditions itself", self.server_version)
            return {}
        by_operation = row_filters.row_filters(cursor, infos, listeners)
        filters = row_filters.filters_by_publication(self._watch.publications, by_operation)
        for name, tables in sorted(filters.items()):
            for table, text in sorted(tables.items(), key=lambda item: str(item[0])):
                logger.debug("publication %s filters %s: %s", name, table, text)
        return {name: tables for name, tables in filters.items() if tables}

    def _create_publications(self, cursor: Any, needed: Dict[TableName, Operation]) -> None:
        config = self.config
        prefix, slot = config.publication_slot_prefix, config.replication_slot
        for name in self._watch.names:
            ownership.check_publication(cursor, name, prefix, slot)
        with catalog.transaction(cursor):
            if ownership.check_publication(cursor, config.publication_name, prefix, slot) is not None:
                # An earlier version's one publication: the slot it served is gone.
                catalog.drop_publication(cursor, config.publication_name)
            self._watch.create(cursor, needed)

    def _resume_publications(
        self, cursor: Any, current: Dict[str, Optional[Set[TableName]]], needed: Dict[TableName, Operation]
    ) -> None:
        watch = self._watch
        with catalog.transaction(cursor):
            for name, tables in current.items():
                if tables is None:  # dropped by someone: made again, empty, then filled
                    catalog.create_publication(cursor, name, (), self.server_version, self._owner,
                                               publications.publish_option(watch.publications[name]))
            # A filter left by a run with server_filters: dropped here, made again once
            # the identities are set.
            left = {name: {table: "" for table in row_filters.row_filtered_tables(cursor, name, self.server_version)}
                    for name, tables in current.items() if tables}
            watch.move(cursor, needed, current={name: tables or set() for name, tables in current.items()},
                       current_filters=left)
            for name in watch.names:
                catalog.ensure_publication_options(cursor, name, self.server_version)

    def _plugin_options(self) -> Dict[str, str]:
        options = {
            "proto_version": str(self.protocol_version),
            # pgoutput reads a comma-separated list (names of [a-z0-9_-] need no quotes).
            "publication_names": ",".join(self._watch.names),
        }
        if self.server_version >= 140000:
            options["messages"] = "true"
        if self.config.use_streaming:
            options["streaming"] = "true"
        return options

    def _remove_server_objects(self) -> None:
        cursor = self._started().cursor()
        for name in self._watch.names:
            catalog.drop_publication(cursor, name)
        # A temporary slot goes when its walsender exits, a moment after we disconnect;
        # a persistent one is dropped once that walsender lets go of it.
        state = catalog.wait_for_slot(cursor, self.config.replication_slot, 10.0, gone=not self.config.durable)
        if state is not None and state.active_pid is None:
            catalog.drop_slot(cursor, self.config.replication_slot)

    def _clean_up_failed_start(
        self, published: bool, drop_slot: bool, identities: Optional[List[identity.ReplicaIdentity]]
    ) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join()
            self._thread = None
        query = self._query
        if query is None or not query.is_open:
            return
        try:
            if identities is not None:
                identity.restore_replica_identities(query.plain_cursor(), identities)
        except psycopg2.Error:
            logger.warning("could not put back the replica identity of the listened tables after a "
                           "failed start", exc_info=True)
        try:
            if published:
                self._remove_server_objects()
            elif drop_slot:
                catalog.drop_slot(query.plain_cursor(), self.config.replication_slot)
        except psycopg2.Error:
            logger.warning("could not remove the server objects of a failed start", exc_info=True)
        finally:
            query.close()


def _as_setup_error(exc: BaseException, setup_timeout: float) -> BaseException:
    if isinstance(exc, FlashError) or not isinstance(exc, Exception):
        return exc
    message = one_line(exc)
    if isinstance(exc, psycopg2.Error) and exc.pgcode == psycopg2.errorcodes.INSUFFICIENT_PRIVILEGE:
        return ConfigurationError(
            f"the server refused: {message}. flash_wal's role needs CREATE on the database "
            "(for its publication) and must own the listened tables (to publish them and to "
            "set REPLICA IDENTITY FULL, which DriverConfig(replica_identity_full=False) skips)"
        )
    if isinstance(exc, psycopg2.Error) and exc.pgcode == psycopg2.errorcodes.LOCK_NOT_AVAILABLE:
        return ConfigurationError(
            f"a listened table stayed locked by another transaction for setup_timeout="
            f"{setup_timeout:g} s ({message}); finish or cancel long transactions on it, "
            "or raise DriverConfig(setup_timeout=...)"
        )
    return FlashError(f"could not set up replication: {message}")
