"""The parser on frames captured from real servers (tests/support/capture_frames.py made them)."""

import json
import pathlib

import pytest

from flash_wal.errors import ProtocolError
from flash_wal.pgoutput import (
    Begin, Commit, Delete, Insert, Message, PgOutputParser, Relation, Truncate, Type, Update,
)
from flash_wal.sentinels import UNCHANGED_TOAST

FRAMES = sorted(pathlib.Path(__file__).parents[1].joinpath("support", "frames").glob("pg*.json"))


def load(path):
    capture = json.loads(path.read_text())
    parser = PgOutputParser(capture["protocol_version"])
    return [(frame["data_start"], parser.parse(bytes.fromhex(frame["payload"]))) for frame in capture["frames"]]


@pytest.fixture(params=FRAMES, ids=[path.stem for path in FRAMES])
def messages(request):
    return load(request.param)


def test_frames_were_captured_for_several_versions():
    assert {path.stem for path in FRAMES} >= {"pg15", "pg18"}


def test_transactions_are_framed_by_begin_and_commit(messages):
    open_begin = None
    for data_start, message in messages:
        if isinstance(message, Begin):
            assert open_begin is None
            open_begin = message
        elif isinstance(message, Commit):
            assert open_begin is not None
            assert message.commit_lsn == open_begin.final_lsn  # the same commit record
            assert message.end_lsn > message.commit_lsn
            assert data_start == message.end_lsn
            assert message.commit_time == open_begin.commit_time
            open_begin = None
        elif isinstance(message, (Relation, Type)):
            assert data_start == 0  # not the last write of its callback


def test_the_scenario_reads_back(messages):
    kinds = [type(m).__name__ for _, m in messages if not isinstance(m, (Begin, Commit, Relation, Type))]
    assert kinds == ["Insert", "Insert", "Update", "Delete", "Insert", "Update", "Update", "Delete",
                     "Truncate", "Message", "Message", "Insert"]
    relations = {m.relid: m for _, m in messages if isinstance(m, Relation)}
    capture = next(r for r in relations.values() if r.name == "capture")
    assert capture.namespace == "public" and capture.replica_identity == "f"
    assert [c.name for c in capture.columns] == ["id", "title", "body", "mood", "price"]
    assert [c.is_key for c in capture.columns] == [True, True, True, True, True]  # FULL: all
    assert capture.columns[4].type_modifier == (6 << 16 | 2) + 4  # numeric(6,2)
    mood = next(m for _, m in messages if isinstance(m, Type))
    assert mood.name == "capture_mood" and mood.type_oid == capture.columns[3].type_oid

    changes = [m for _, m in messages if isinstance(m, (Insert, Update, Delete, Truncate, Message))]
    first, second, update, delete, key_insert, no_old, key_change, key_delete, truncate, plain_msg, txn_msg, last = changes
    assert first.new == (b"1", b"one", b"x" * 10000, b"happy", b"9.99")
    assert second.new == (b"2", None, None, None, None)
    assert update.old == (b"1", b"one", b"x" * 10000, b"happy", b"9.99") and not update.old_is_key
    assert update.new == (b"1", b"uno", UNCHANGED_TOAST, b"happy", b"9.99")  # body not resent
    assert delete.old == (b"2", None, None, None, None) and not delete.old_is_key
    assert key_insert.new == (b"1", b"k")
    assert no_old.old is None and no_old.new == (b"1", b"changed")  # REPLICA IDENTITY DEFAULT
    assert key_change.old == (b"1", None) and key_change.old_is_key
    assert key_delete.old == (b"2", None) and key_delete.old_is_key
    assert set(truncate.relids) == set(relations) and truncate.cascade and truncate.restart_identity
    assert (plain_msg.prefix, plain_msg.content, plain_msg.transactional) == ("capture", b"not transactional", False)
    assert (txn_msg.content, txn_msg.transactional) == (b"\x00\xff", True)
    assert last.new == (b"5", b"m")
    assert all(m.xid is None for m in changes)  # not streamed


@pytest.mark.parametrize("path", FRAMES, ids=[path.stem for path in FRAMES])
def test_every_truncation_of_every_real_frame_is_a_protocol_error(path):
    capture = json.loads(path.read_text())
    for frame in capture["frames"]:
        payload = bytes.fromhex(frame["payload"])
        for cut in range(len(payload)):
            if cut > 400 and cut % 97:
                continue  # long TOAST values: sample their middle
            with pytest.raises(ProtocolError):
                PgOutputParser(capture["protocol_version"]).parse(payload[:cut])
