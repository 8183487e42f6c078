"""The replication thread's event builders make exactly what the attrs constructors make."""

import datetime

import attr
import pytest

from flash_wal.events import (
    DeleteEvent,
    InsertEvent,
    UpdateEvent,
    build_delete,
    build_insert,
    build_update,
)

META = dict(
    table="public.posts", lsn=0x16B3748, commit_lsn=0x16B37A0, xid=750,
    commit_time=datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.timezone.utc),
)
META_ARGS = tuple(META.values())

CASES = [
    (build_insert(*META_ARGS, {"id": 1}), InsertEvent({"id": 1}, **META)),
    (build_update(*META_ARGS, {"id": 1}, {"id": 2}), UpdateEvent({"id": 1}, {"id": 2}, **META)),
    (build_update(*META_ARGS, None, {"id": 2}), UpdateEvent(None, {"id": 2}, **META)),
    (build_delete(*META_ARGS, {"id": 1}), DeleteEvent({"id": 1}, **META)),
]


@pytest.mark.parametrize("built, constructed", CASES, ids=lambda case: type(case).__name__)
def test_built_event_is_the_constructed_one(built, constructed):
    assert type(built) is type(constructed)
    assert built == constructed
    assert repr(built) == repr(constructed)
    assert attr.asdict(built) == attr.asdict(constructed)
    assert built.operation is constructed.operation


@pytest.mark.parametrize("built, _", CASES, ids=lambda case: type(case).__name__)
def test_built_event_is_frozen(built, _):
    with pytest.raises(attr.exceptions.FrozenInstanceError):
        built.table = "public.other"
    assert attr.evolve(built, lsn=1).lsn == 1
