"""Making the replication slot this client's own at start(), or refusing why not.

A slot of the configuration's name may be in use by another instance, be a durable slot
this configuration made, or be someone else's altogether; flash_wal resumes or replaces
only what it can tell it made (see ``ownership``).
"""

import logging
from typing import Any, Dict, Optional, Set, Tuple

from ...errors import ConfigurationError, SlotInUseError
from ...operations import Operation
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
    prefix, slot = config.publication_slot_prefix, config.replication_slot
    names = (*config.publication_names, config.publication_name)  # with the earlier versions' one
    owners = [ownership.check_publication(cursor, name, prefix, slot) for name in names]
    owner = next((owner for owner in owners if owner is not None), None)
    name = names[owners.index(owner)] if owner is not None else config.publication_names[0]
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


def resumed_publications(
    cursor: Any, config: Any
) -> Tuple[Dict[str, Operation], Dict[str, Optional[Set[TableName]]]]:
    """The publications of a resumed durable slot, with the operations each publishes,
    and the tables each holds now (None for one that does not exist).

    The slot's WAL is decoded with the publications as they were named then, so one
    made now under another name would not be seen for it: a slot made by an earlier
    version, with its one publication for every operation (``<prefix>-<slot>``, or
    ``<prefix>_<slot>`` from flash_wal 0.1.0), goes on with it.
    """
    prefix, slot = config.publication_slot_prefix, config.replication_slot
    per_operation = {name: operation for operation, name in ownership.operation_publication_names(prefix, slot).items()}
    owners = [ownership.check_publication(cursor, name, prefix, slot) for name in per_operation]
    if not any(owners):
        earlier = config.publication_name
        tables = catalog.publication_tables(cursor, earlier) if ownership.check_publication(
            cursor, earlier, prefix, slot) is not None else None
        if tables is None:
            earlier = ownership.legacy_publication_name(prefix, slot)
            tables = catalog.publication_tables(cursor, earlier)
        if tables is not None:
            made = "named as by flash_wal 0.1.0" if earlier != config.publication_name else "made by an earlier version"
            logger.warning(
                "resuming the durable slot %s with its publication %s, %s for every operation; it is used and "
                "kept as it is. Run 'flash-wal cleanup --prefix %s --slot %s' once it is no longer needed to "
                "publish only the operations listeners want (what the slot kept is then lost)",
                slot, earlier, made, prefix, slot,
            )
            return {earlier: Operation.ALL}, {earlier: tables}
    return per_operation, {name: catalog.publication_tables(cursor, name) for name in per_operation}
