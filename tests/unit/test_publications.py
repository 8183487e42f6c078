"""Which operations a table's listeners need published (no server)."""

from flash_wal import Condition, Listener, Operation
from flash_wal.drivers.wal_logical.publications import needed_operations, publication_contents, publish_option
from flash_wal.table_name import TableName


def listener(table, operations, **options):
    made = Listener(table=table, **options)
    if operations:
        made.on(operations, lambda event: None)
    return made


T, U = TableName("public", "t"), TableName("public", "u")


def test_operations_listened_to_are_needed_and_updates_for_insert_and_delete_listeners():
    assert needed_operations([listener("t", Operation.INSERT)]) == {T: Operation.INSERT | Operation.UPDATE}
    with_condition = listener("t", Operation.DELETE, conditions=[Condition("id", 1)])
    assert needed_operations([with_condition]) == {T: Operation.DELETE | Operation.UPDATE}
    assert needed_operations([listener("t", Operation.UPDATE)]) == {T: Operation.UPDATE}
    assert needed_operations([listener("t", Operation.TRUNCATE)]) == {T: Operation.TRUNCATE}
    assert needed_operations([listener("t", None)]) == {T: Operation(0)}


def test_listeners_of_one_table_add_up():
    needed = needed_operations([listener("t", Operation.UPDATE), listener("t", Operation.TRUNCATE),
                                listener("u", Operation.ALL)])
    assert needed == {T: Operation.UPDATE | Operation.TRUNCATE, U: Operation.ALL}


def test_each_publication_holds_the_tables_needing_its_operations():
    publications = {"p-s-insert": Operation.INSERT, "p-s-update": Operation.UPDATE, "p-s": Operation.ALL}
    contents = publication_contents(publications, {T: Operation.INSERT, U: Operation(0)})
    assert contents == {"p-s-insert": {T}, "p-s-update": set(), "p-s": {T}}
    assert publish_option(Operation.ALL) == "insert, update, delete, truncate"


def test_only_a_publication_of_one_operation_gets_that_operations_filters():
    from flash_wal.drivers.wal_logical.row_filters import filters_by_publication

    publications = {"p-s-insert": Operation.INSERT, "p-s-update": Operation.UPDATE, "p-s": Operation.ALL}
    filters = {Operation.INSERT: {T: "(n = 1)"}}
    assert filters_by_publication(publications, filters) == {"p-s-insert": {T: "(n = 1)"}, "p-s-update": {}, "p-s": {}}


def test_servers_before_the_may_2025_minor_releases_may_decode_with_a_stale_publication():
    from flash_wal.drivers.wal_logical.publications import stale_after_alter

    assert stale_after_alter(160002) and stale_after_alter(170004) and stale_after_alter(120020)
    assert not stale_after_alter(160009) and not stale_after_alter(150018) and not stale_after_alter(180000)
