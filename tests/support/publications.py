"""What a configuration's publications hold on the server: one publication per operation."""

from flash_wal.drivers.wal_logical import ownership


def published_tables(db, config):
    """The tables in any of the configuration's publications, sorted."""
    return sorted({row[0] for row in db.fetchall(
        "SELECT tablename::text FROM pg_publication_tables WHERE pubname = ANY(%s)",
        (list(config.publication_names),))})


def published_operations(db, config, table):
    """The operations the server publishes for ``table`` (a table name without schema),
    as the set of names of the publications that hold it: {"insert", "update", ...}."""
    names = ownership.operation_publication_names(config.publication_slot_prefix, config.replication_slot)
    held = {row[0] for row in db.fetchall(
        "SELECT pubname::text FROM pg_publication_tables WHERE pubname = ANY(%s) AND tablename = %s",
        (list(names.values()), table))}
    return {ownership.OPERATION_SUFFIXES[operation] for operation, name in names.items() if name in held}


def publications_exist(db, config):
    """Which of the configuration's publications exist, sorted."""
    return sorted(row[0] for row in db.fetchall(
        "SELECT pubname::text FROM pg_publication WHERE pubname = ANY(%s)", (list(config.publication_names),)))


def publication_of(config, operation):
    """The name of the configuration's publication of ``operation`` (an Operation)."""
    return ownership.operation_publication_names(config.publication_slot_prefix, config.replication_slot)[operation]
