"""Removing what a configuration keeps on the server: ``Driver.drop()`` and
``flash-wal cleanup``. Its slot, its publications, and its backfills' progress."""

from typing import Any

from ...errors import ConfigurationError
from . import backfill_progress, catalog, ownership
from .config import DriverConfig
from .query_connection import connect_for_setup

__all__ = ["drop_configuration"]


def drop_configuration(config: DriverConfig, database_cnx: str) -> None:
    """See :meth:`~flash_wal.drivers.wal_logical.Driver.drop`."""
    prefix, slot = config.publication_slot_prefix, config.replication_slot
    conn: Any = connect_for_setup(database_cnx, config.setup_timeout)
    try:
        cursor = conn.cursor()
        state = catalog.wait_for_slot(cursor, slot, config.slot_wait_timeout, gone=False)
        if state is not None and state.active_pid is not None:
            raise ConfigurationError(
                f"replication slot {slot!r} is in use (walsender pid "
                f"{state.active_pid}); stop the client that uses it first"
            )
        ownership.check_slot_is_droppable(cursor, slot)
        report = ownership.slot_report(cursor, prefix, slot)
        if not report.legacy_publication:
            for name in report.publications:
                ownership.check_publication(cursor, name, prefix, slot)
        catalog.drop_slot(cursor, slot)
        for name in report.publications:
            catalog.drop_publication(cursor, name)
        backfill_progress.drop_slot_progress(cursor, slot)
    finally:
        conn.close()
