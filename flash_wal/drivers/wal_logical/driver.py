"""The wal_logical driver: configuration, server set-up and the client-facing calls."""

import contextlib
import logging
import re
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import attr
import psycopg2
import psycopg2.errorcodes

from ...connection import cannot_connect, connect, mask_dsn
from ...errors import ConfigurationError, FlashError, ReplicationError, SlotInUseError, one_line
from ...listener import Listener
from ...table_name import TableName
from ...validators import config_from, instance_of, positive_int, seconds
from .. import base
from . import claim, identity, ownership, server
from .replication import ReplicationThread

__all__ = ["Driver", "DriverConfig"]

logger = logging.getLogger(__name__)

_SERVER_NAME = re.compile(r"[a-z0-9_]+")
_MAX_NAME_BYTES = 63


def _check_server_name(_instance: Any, attribute: "attr.Attribute[str]", value: Any) -> None:
    if not isinstance(value, str) or not _SERVER_NAME.fullmatch(value) or len(value) > _MAX_NAME_BYTES:
        raise ConfigurationError(
            f"{attribute.name} must be 1 to {_MAX_NAME_BYTES} lower-case letters, digits or "
            f"underscores (it names objects on the server); got {value!r}"
        )


@attr.s(frozen=True, slots=True, kw_only=True)
class DriverConfig:
    """Settings of the wal_logical driver. Every instance needs its own names."""

    #: Start of the publication's name, which is
    #: ``<publication_slot_prefix>-<replication_slot>`` (63 bytes at most). Unique per
    #: client. Names are 1 to 63 lower-case letters, digits and underscores.
    publication_slot_prefix: str = attr.ib(default="flash_publication", validator=_check_server_name)
    #: The replication slot's exact name. Unique per running client.
    replication_slot: str = attr.ib(default="flash_replication", validator=_check_server_name)
    #: ``True`` (PostgreSQL 14+): the server sends large transactions while they are in
    #: progress instead of decoding them to its own disk first; flash_wal holds their
    #: changes and delivers them once the transaction commits, in order, or never if it
    #: rolls back (a rolled-back savepoint drops only its rows).
    use_streaming: bool = attr.ib(default=False, validator=instance_of(bool))
    #: Bytes of one streamed transaction held in memory; past it the rest goes to an
    #: anonymous temporary file, removed when delivered, rolled back or closed.
    stream_buffer_bytes: int = attr.ib(
        default=16 * 1024 * 1024, validator=positive_int, metadata={"shown_default": "16 MiB"}
    )
    #: ``False``: a temporary slot, gone with the client; changes committed while no
    #: client runs are not delivered. ``True``: a persistent slot and publication that
    #: outlive the client; the next start resumes after the last acknowledged
    #: transaction (at-least-once). ``driver.drop(database_cnx)`` or ``flash-wal
    #: cleanup`` removes them.
    durable: bool = attr.ib(default=False, validator=instance_of(bool))
    #: Set ``REPLICA IDENTITY FULL`` on listened tables so updates and deletes carry the
    #: whole old row. ``False`` leaves tables alone: then ``UpdateEvent.old`` is
    #: ``None`` unless the key changed and ``DeleteEvent.old`` holds the key columns.
    replica_identity_full: bool = attr.ib(default=True, validator=instance_of(bool))
    #: Most seconds between two status updates to the server, moved or not, and
    #: between two checks of the publication; at least 1. Acknowledgements go out
    #: within 20 ms of moving, whatever this says.
    status_interval: float = attr.ib(default=10.0, validator=seconds(1))
    #: Seconds ``start()`` waits for the slot of a client that died to be released.
    slot_wait_timeout: float = attr.ib(default=5.0, validator=seconds(0, inclusive=False))
    #: Seconds ``start()`` and ``attach()`` wait on the server: for locks on listened
    #: tables, and, while the slot is created, for the transactions open at that moment
    #: to end. Past it: a ``ConfigurationError`` naming the cause.
    setup_timeout: float = attr.ib(default=30.0, validator=seconds(0, inclusive=False))
    #: After a lost connection the client tries again at once, then waits this many
    #: seconds after each failed try, doubling up to ``reconnect_max_delay``; it
    #: retries until closed. With a temporary slot, changes committed while
    #: disconnected are lost.
    reconnect_delay: float = attr.ib(default=0.5, validator=seconds(0, inclusive=False))
    #: The longest wait between two reconnection attempts.
    reconnect_max_delay: float = attr.ib(default=30.0, validator=seconds(0, inclusive=False))

    def __attrs_post_init__(self) -> None:
        if len(self.publication_name) > _MAX_NAME_BYTES:
            raise ConfigurationError(
                f"publication_slot_prefix and replication_slot together name the publication "
                f"{self.publication_name!r}, longer than {_MAX_NAME_BYTES} bytes; shorten them"
            )

    @property
    def publication_name(self) -> str:
        """The publication's name: derived from both names, so a restart finds it again,
        and joined by a hyphen, which neither may contain, so that no two configurations
        share it."""
        return ownership.publication_name(self.publication_slot_prefix, self.replication_slot)


class Driver(base.Driver):
    """Logical replication with pgoutput. ``Driver()`` uses every default."""

    def __init__(self, config: Optional[DriverConfig] = None, **kwargs: Any) -> None:
        self.config = config = config_from(DriverConfig, config, kwargs)
        self._lock = threading.Lock()  # one user of the query connection at a time
        self._dsn: Optional[str] = None
        self._query: Any = None
        self._query_session: Optional[Tuple[int, Any]] = None  # its backend, which holds the slot's lock
        self._thread: Optional[ReplicationThread] = None
        self._tables: Set[TableName] = set()
        self._table_oids: Dict[TableName, int] = {}  # of self._tables, to tell a rename
        # The publication as this driver last left it, to tell a change behind our back.
        self._publication_seen: Optional[server.PublicationState] = None
        self._on_tables_gone: Callable[[Iterable[TableName]], None] = lambda tables: None
        #: config.publication_name, or the old name of a resumed durable slot's publication
        self._publication = config.publication_name
        self._owner = ownership.PublicationOwner(
            prefix=config.publication_slot_prefix, slot=config.replication_slot, durable=config.durable
        )
        self._on_fatal: Optional[Callable[[BaseException], None]] = None
        #: Set once another instance took the slot's lock while this one was disconnected.
        self._lost_slot: Optional[SlotInUseError] = None
        self.server_version = 0
        self.protocol_version = 0

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
        if self._dsn is not None:
            raise FlashError("this Driver has already been started; give each Client its own Driver")
        self._dsn = database_cnx
        self._on_fatal = on_fatal
        config = self.config
        published = False
        slot_existed = True  # until we know the slot is ours to create (and to drop on failure)
        identities_before: Optional[List[identity.ReplicaIdentity]] = None
        try:
            self._query = self._connect_query()
            cursor = self._query.cursor()
            self._query_session = server.session(cursor)
            self.server_version = server.server_version(cursor)
            self.protocol_version = server.protocol_version_for(self.server_version)
            server.check_server(cursor, config.replication_slot)
            if config.use_streaming and self.server_version < 140000:
                raise ConfigurationError("use_streaming=True needs PostgreSQL 14 or later; set it to False")
            if sink.wants_messages and self.server_version < 140000:
                raise ConfigurationError("on_message needs PostgreSQL 14 or later (pgoutput's messages option)")
            infos = self._describe(cursor, listeners)
            install_trigger = identity.check_replica_identities(
                cursor, infos.values(), full=config.replica_identity_full, server_version=self.server_version
            )
            slot_existed = claim.claim_slot(cursor, config)
            current = None
            if slot_existed:
                self._publication, current = claim.resumed_publication(cursor, config)
            if current is not None:
                # Resuming: the slot's WAL is decoded with the publication as it was
                # then, so it is altered, never replaced.
                server.alter_publication(cursor, self._publication, add=set(infos) - current,
                                         drop=current - set(infos))
                server.ensure_publication_options(cursor, self._publication, self.server_version)
            else:
                ownership.check_publication(cursor, self._publication, config.publication_slot_prefix,
                                            config.replication_slot)
                server.create_publication(cursor, self._publication, infos, self.server_version, self._owner)
                published = True
            identities_before = identity.replica_identities(cursor, (info.oid for info in infos.values()))
            self._set_identities(cursor, infos.values(), install_trigger)
            self._tables = set(infos)
            self._table_oids = {table: info.oid for table, info in infos.items()}
            self._publication_seen = server.publication_state(cursor, self._publication)
            self._on_tables_gone = on_tables_gone
            self._thread = ReplicationThread(
                connect=lambda replication: connect(database_cnx, replication=replication),
                slot=config.replication_slot,
                publication=self._publication,
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
                "streaming from %s: tables %s, %s slot %s, publication %s, pgoutput protocol %d",
                mask_dsn(database_cnx), ", ".join(sorted(map(str, infos))) or "(none yet)",
                ("resumed durable" if slot_existed else "durable") if config.durable else "temporary",
                config.replication_slot, self._publication, self.protocol_version,
            )
        except BaseException as exc:
            self._clean_up_failed_start(published, drop_slot=not slot_existed, identities=identities_before)
            error = _as_setup_error(exc, config.setup_timeout)
            if error is exc:
                raise
            raise error from exc

    def listen(self, listeners: Sequence[Listener]) -> int:
        with self._lock:
            cursor = self._query_cursor()
            try:
                infos = self._describe(cursor, listeners)
                wanted = set(infos)
                added = wanted - self._tables
                new_infos = [infos[t] for t in added]
                install_trigger = identity.check_replica_identities(
                    cursor, new_infos, full=self.config.replica_identity_full, server_version=self.server_version
                )
                self._set_identities(cursor, new_infos, install_trigger)
                server.alter_publication(cursor, self._publication, add=added, drop=self._tables - wanted)
                logger.debug("publication %s now holds %s", self._publication,
                             ", ".join(sorted(map(str, wanted))) or "no table")
                self._tables = wanted
                self._table_oids = {table: info.oid for table, info in infos.items()}
                self._publication_seen = server.publication_state(cursor, self._publication)
                return server.current_wal_lsn(cursor)
            except psycopg2.Error as exc:
                raise _as_setup_error(exc, self.config.setup_timeout) from exc

    def close(self) -> bool:
        drained = True
        thread = self._thread
        if thread is not None:
            thread.stop()
            thread.join()
            drained = thread.drained
        with self._lock:
            if self._lost_slot is not None:
                logger.info("left slot %s and publication %s to the instance that took the slot",
                            self.config.replication_slot, self._publication)
            elif self._query is not None:
                try:
                    if not self.config.durable:
                        self._remove_server_objects()
                        logger.debug("removed publication %s and slot %s", self._publication,
                                     self.config.replication_slot)
                    else:
                        logger.debug("kept the durable slot %s and publication %s",
                                     self.config.replication_slot, self._publication)
                finally:
                    self._query.close()
                    self._query = None
        return drained

    def drop(self, database_cnx: str) -> None:
        """Remove this configuration's slot and publication from the server.

        For a durable driver that no client runs any more: what the slot kept is gone.
        A slot of another plugin, database or kind, or a publication flash_wal did not
        make for this configuration, is a ConfigurationError, and nothing is dropped.
        A publication with the old name ``<prefix>_<slot>`` is dropped too, unless
        another existing slot's name could have made it (see ``ownership``).
        """
        if self._thread is not None and self._thread.is_alive():
            raise FlashError("close the client before dropping its slot")
        self._dsn = database_cnx
        prefix, slot = self.config.publication_slot_prefix, self.config.replication_slot
        conn = self._connect_query()
        try:
            cursor = conn.cursor()
            state = server.wait_for_slot(cursor, slot, self.config.slot_wait_timeout, gone=False)
            if state is not None and state.active_pid is not None:
                raise ConfigurationError(
                    f"replication slot {slot!r} is in use (walsender pid "
                    f"{state.active_pid}); stop the client that uses it first"
                )
            ownership.check_slot_is_droppable(cursor, slot)
            report = ownership.slot_report(cursor, prefix, slot)
            if report.publication is not None and not report.legacy_publication:
                ownership.check_publication(cursor, report.publication, prefix, slot)
            server.drop_slot(cursor, slot)
            if report.publication is not None:
                server.drop_publication(cursor, report.publication)
        finally:
            conn.close()

    def stop_soon(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    def stats(self) -> Dict[str, Any]:
        figures: Dict[str, Any] = {"lag_bytes": self._lag_bytes()}
        if self._thread is not None:
            figures["reconnects"] = self._thread.reconnects
            if self._thread.reconnecting:
                figures["state"] = "reconnecting"
        return figures

    # --- helpers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _query_when_free(self, timeout: float) -> Iterator[Optional[Any]]:
        """A cursor of the query connection, or None when another thread holds it past
        ``timeout`` or it is closed; a server error ends the block quietly. Never
        reopened here: the replication thread does that before it reconnects."""
        if not self._lock.acquire(timeout=timeout):
            yield None
            return
        try:
            yield None if self._query is None or self._query.closed else self._query.cursor()
        except psycopg2.Error:
            pass  # the server is away; the replication thread is reconnecting
        finally:
            self._lock.release()

    def _lag_bytes(self) -> Optional[int]:
        # Unknown at once, rather than known late, while attach or a check runs.
        with self._query_when_free(timeout=0.5) as cursor:
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
        """Whether the publication still holds every listened table as this driver left
        it; a quick look, skipped when the server cannot be asked now.

        A table dropped or renamed meanwhile is not an error: its listeners are
        detached. A table taken out of the publication by someone else is: the server
        skipped its changes without a word.
        """
        gone: Set[TableName] = set()
        with self._query_when_free(timeout=1.0) as cursor:
            if cursor is None:
                return
            gone = self._forget_gone_tables(cursor)
            state = server.publication_state(cursor, self._publication)  # without them by now
            if state is None:
                # Dropped: the server says so in the stream when it decodes a change
                # without it (PostgreSQL 18) or fails (before). Made again at once,
                # nothing is lost if nothing changed in between.
                logger.warning("publication %r no longer exists; creating it again", self._publication)
                server.create_publication(cursor, self._publication, self._tables, self.server_version, self._owner)
                self._publication_seen = server.publication_state(cursor, self._publication)
            elif state != self._publication_seen:
                self._check_tables_kept(state)
                self._publication_seen = state
        self._report_gone(gone)

    def _forget_gone_tables(self, cursor: Any) -> Set[TableName]:
        """Stop publishing tables that were dropped or renamed; return them."""
        current = server.table_names(cursor, self._table_oids.values())
        gone = {table for table, oid in self._table_oids.items() if current.get(oid) != table}
        renamed = [current[self._table_oids[table]] for table in gone if self._table_oids[table] in current]
        if renamed and server.publication_state(cursor, self._publication) is not None:
            server.alter_publication(cursor, self._publication, add=(), drop=renamed)
        self._tables -= gone
        for table in gone:
            del self._table_oids[table]
        return gone

    def _check_tables_kept(self, state: "server.PublicationState") -> None:
        removed = sorted(str(table) for table, oid in self._table_oids.items() if oid not in state.relids)
        if removed:
            raise ReplicationError(
                f"table {', '.join(removed)} was removed from publication {self._publication!r} "
                "by someone else while the client streamed: the server skipped its changes from then on, "
                "and cannot send them again (it decodes each change with the publication as it was then). "
                "Leave flash_wal's publications to flash_wal, and start the client again; the changes made "
                "to that table meanwhile are missing"
            )

    def _report_gone(self, gone: Set[TableName]) -> None:
        for table in sorted(gone, key=str):
            logger.warning("table %s was dropped or renamed; its listeners are detached", table)
        if gone:
            # Not from the replication thread: detaching waits for running callbacks.
            threading.Thread(target=self._on_tables_gone, args=(gone,), name="flash_wal-detach", daemon=True).start()

    def _query_cursor(self) -> Any:
        """A cursor of the query connection, opened again (with the slot's lock) if the
        server dropped it."""
        if self._lost_slot is not None:
            raise self._lost_slot
        if not self._query.closed:
            cursor = self._query.cursor()
            try:
                cursor.execute("SELECT 1")
                return cursor
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self._query.close()
        self._query = self._connect_query()
        cursor = self._query.cursor()
        self._take_slot_lock_again(cursor)
        self._query_session = server.session(cursor)
        return cursor

    def _take_slot_lock_again(self, cursor: Any) -> None:
        """The slot's lock went with the old session (a server restart): without it, a
        second instance could start on the slot. If one did meanwhile, this client stops:
        never two instances on one slot."""
        slot = self.config.replication_slot
        taken = server.wait_for_slot_lock(cursor, slot, 0)
        if not taken:
            if self._query_session is not None and server.slot_lock_holder(cursor, slot) == self._query_session:
                # The connection broke on this side only (a network failure): the server
                # has not noticed yet, and our previous session still holds the lock.
                logger.warning("ending this client's previous query connection (pid %d), which the server "
                               "still runs and which holds the lock on replication slot %s",
                               self._query_session[0], slot)
                cursor.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (self._query_session[0],))
            taken = server.wait_for_slot_lock(cursor, slot, self.config.slot_wait_timeout)
        if taken:
            logger.debug("took the lock on replication slot %s again", slot)
            return
        self._lost_slot = SlotInUseError(
            f"another instance took replication slot {slot!r} while this client was disconnected "
            "from the server (its lock on the slot went with the connection), so this client "
            "stops; give each instance its own replication_slot and publication_slot_prefix"
        )
        self._query.close()
        self._query = None
        if self._thread is not None:
            self._thread.stop()
            if self._thread is not threading.current_thread() and self._on_fatal is not None:
                self._on_fatal(self._lost_slot)  # the replication thread reports what it raises itself
        raise self._lost_slot

    def _restore_publication(self) -> None:
        """Before a reconnection attempt: the server may have restarted (the query
        connection is opened again, with the slot's lock) and the publication may have
        been changed."""
        with self._lock:
            self._query_cursor()
        self._check_publication()

    def _connect_query(self) -> Any:
        try:
            conn = connect(self._dsn)
            # ALTER TABLE ... REPLICA IDENTITY waits for every transaction on the
            # table; better a clear error than a start() that hangs.
            conn.cursor().execute("SELECT set_config('lock_timeout', %s, false)",
                                  (f"{int(self.config.setup_timeout * 1000)}ms",))
            return conn
        except psycopg2.OperationalError as exc:
            raise cannot_connect(self._dsn, exc) from exc

    def _set_identities(self, cursor: Any, infos: Sequence[server.TableInfo], install_trigger: bool) -> None:
        """What check_replica_identities found writes need: the event trigger for future
        partitions first (so none is created unseen meanwhile), then FULL on every table
        and partition if configured."""
        if install_trigger:
            identity.install_partition_identity_trigger(cursor)
        if self.config.replica_identity_full:
            identity.set_replica_identity_full(cursor, infos, self.server_version)

    def _describe(self, cursor: Any, listeners: Sequence[Listener]) -> Dict[TableName, server.TableInfo]:
        infos = server.describe_tables(cursor, (listener.table for listener in listeners))
        for listener in listeners:
            server.check_listener_columns(listener, infos[listener.table])
        return infos

    def _plugin_options(self) -> Dict[str, str]:
        options = {
            "proto_version": str(self.protocol_version),
            "publication_names": self._publication,
        }
        if self.server_version >= 140000:
            options["messages"] = "true"
        if self.config.use_streaming:
            options["streaming"] = "true"
        return options

    def _remove_server_objects(self) -> None:
        cursor = self._query_cursor()
        server.drop_publication(cursor, self._publication)
        # A temporary slot goes when its walsender exits, a moment after we disconnect;
        # a persistent one is dropped once that walsender lets go of it.
        state = server.wait_for_slot(cursor, self.config.replication_slot, 10.0, gone=not self.config.durable)
        if state is not None and state.active_pid is None:
            server.drop_slot(cursor, self.config.replication_slot)

    def _clean_up_failed_start(
        self, published: bool, drop_slot: bool, identities: Optional[List[identity.ReplicaIdentity]]
    ) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join()
            self._thread = None
        if self._query is None:
            return
        try:
            if identities is not None:
                identity.restore_replica_identities(self._query.cursor(), identities)
        except psycopg2.Error:
            logger.warning("could not put back the replica identity of the listened tables after a "
                           "failed start", exc_info=True)
        try:
            if published:
                self._remove_server_objects()
            elif drop_slot:
                server.drop_slot(self._query.cursor(), self.config.replication_slot)
        except psycopg2.Error:
            logger.warning("could not remove the server objects of a failed start", exc_info=True)
        finally:
            self._query.close()
            self._query = None


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
