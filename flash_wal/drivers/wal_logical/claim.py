"""Making the replication slot this client's own at start(), or refusing why not.

A slot of the configuration's name may be in use by another instance, be a durable slot
this configuration made, or be someone else's altogether; flash_wal resumes or replaces
only what it can tell it made (see ``ownership``).
"""

import logging
from typing import Any, Optional, Set, Tuple

from ...errors import ConfigurationError, SlotInUseError
from ...table_name import TableName
from . import catalog, ownership

logger = logging.getLogger(__name__)


def claim_slot(cursor: Any, config: Any) -> bool:
    """Take the slot's lock and make the slot ours to use; True when an existing slot is
    resumed, False when it is to be created."""
    slot = config.replication_slot
    if catalog.wait_for_slot_lock(cursor, slot, config.slot_wait_timeout):
        state = catalog.wait_for_slot(cursor, slot, config.slot_wait_timeout, gone=False)
    else:
        state = catalog.slot_state(cursor, slot)
        if state is None or state.active_pid is None:
            raise SlotInUseError(
                f"replication slot {slot!r} is in use by another running instance (it is "
                "starting or reconnecting); give each instance its own replication_slot "
                "and publication_slot_prefix, or stop the other one"
            )
    if state is None:
        return False
    if state.active_pid is not None:
        raise SlotInUseError(
            f"replication slot {slot!r} is in use by another running instance (walsender "
            f"pid {state.active_pid}); give each instance its own replication_slot and "
            "publication_slot_prefix, or stop the other one"
        )
    foreign = ownership.foreign_slot(cursor, slot)
    if not config.durable:
        _check_durable_leftover(cursor, config, foreign)
        logger.warning("dropping the inactive durable replication slot %r that this configuration "
                       "made with durable=True", slot)
        catalog.drop_slot(cursor, slot)
        return False
    if foreign is not None:
        raise ConfigurationError(
            f"replication slot {slot!r} exists but is not a pgoutput slot of this database that "
            f"flash_wal could resume: it is {foreign}. Choose another replication_slot, or drop "
            f"that slot if it is no longer needed: {ownership.drop_slot_sql(slot)}"
        )
    if state.invalidated:
        raise catalog.invalidated_slot_error(slot, "its wal_status is 'lost'")
    return True


def _check_durable_leftover(cursor: Any, config: Any, foreign: Optional[str]) -> None:
    """A client with durable=False replaces an inactive slot of its name only when
    flash_wal can tell it made it: a pgoutput slot of this database whose publication
    says this configuration made it durable."""
    prefix, slot, name = config.publication_slot_prefix, config.replication_slot, config.publication_name
    owner = ownership.check_publication(cursor, name, prefix, slot)
    if foreign is None and owner is not None and owner.durable:
        return
    if foreign is not None:
        what = f"it is {foreign}"
        fix = f"if it is not needed, drop it: {ownership.drop_slot_sql(slot)}"
    else:
        what = ("a persistent pgoutput slot of this database, but its publication "
                f"{name!r} {'does not exist' if owner is None else 'says it was temporary'}")
        fix = (f"if it is not needed, drop it with 'flash-wal cleanup --prefix {prefix} --slot {slot}' "
               f"or {ownership.drop_slot_sql(slot)}; or resume it with durable=True")
    raise ConfigurationError(
        f"replication slot {slot!r} exists and is not in use, but flash_wal cannot tell it made it "
        f"for this configuration ({what}), so it is left alone. Choose another replication_slot; or, {fix}"
    )


def resumed_publication(cursor: Any, config: Any) -> Tuple[str, Optional[Set[TableName]]]:
    """The name and tables of a resumed durable slot's publication (tables None if it
    has none).

    A slot made by flash_wal 0.1.0 is resumed with its publication's old name: the
    slot's WAL is decoded with the publications as they were named then, so one made now
    under the new name would not be seen for it.
    """
    prefix, slot, name = config.publication_slot_prefix, config.replication_slot, config.publication_name
    if ownership.check_publication(cursor, name, prefix, slot) is None:
        legacy = ownership.legacy_publication_name(prefix, slot)
        tables = catalog.publication_tables(cursor, legacy)
        if tables is not None:
            logger.warning(
                "resuming the durable slot %s with its publication %s, named as by flash_wal 0.1.0; "
                "it is used and kept as it is. Run 'flash-wal cleanup --prefix %s --slot %s' once it is no "
                "longer needed to move to the new name %s (what the slot kept is then lost)",
                slot, legacy, prefix, slot, name,
            )
            return legacy, tables
    return name, catalog.publication_tables(cursor, name)
