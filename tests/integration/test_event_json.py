"""Events as JSON (``flash-wal listen``'s format), from values the server really sent."""

import base64
import datetime
import json
import math
from decimal import Decimal

from psycopg2 import sql

from flash_wal import UNCHANGED_TOAST, InsertEvent, Operation
from flash_wal.drivers.wal_logical import Driver, DriverConfig
from flash_wal.event_json import UNCHANGED_TOAST_JSON, event_as_dict, event_to_json, json_value

from tests.support.recorder import Recorder

COLUMNS = """
    id int PRIMARY KEY, i int, big bigint, n numeric(10,2), n_nan numeric, f float8, f_inf float8,
    f_nan float8, b boolean, t text, c char(3), d date, ts timestamp, tstz timestamptz, tm time,
    tmtz timetz, iv interval, iv_neg interval, j jsonb, js json, u uuid, raw bytea, ints int[],
    texts text[], dates date[], r int4range, tsr tstzrange, er int4range, ip inet, nothing text
"""
ROW = """
    1, 42, 9007199254740993, 12.5, 'NaN', 0.1, '-Infinity', 'NaN', true, E'h\u00e9llo "q"\\nline', 'ab',
    '2025-01-31', '2025-01-31 12:34:56.789', '2025-01-31 12:34:56+02', '12:34:56', '12:34:56+02',
    '1 day 02:03:04.5', '-30 seconds', '{"a": [1, 2.5, null], "b": {"c": "d"}}', '[1, "x"]',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '{1,NULL,3}', '{"a b",c}', '{2025-01-01}',
    '[1,10)', '[2025-01-01 00:00+00,)', 'empty', '192.168.0.1/24', NULL
"""
EXPECTED_NEW = {
    "id": 1, "i": 42, "big": 9007199254740993, "n": "12.50", "n_nan": "NaN", "f": 0.1,
    "f_inf": "-Infinity", "f_nan": "NaN", "b": True, "t": 'h\u00e9llo "q"\nline', "c": "ab ",
    "d": "2025-01-31", "ts": "2025-01-31T12:34:56.789000", "tstz": "2025-01-31T10:34:56+00:00",
    "tm": "12:34:56", "tmtz": "12:34:56+02:00", "iv": "P1DT2H3M4.5S", "iv_neg": "-PT30S",
    "j": {"a": [1, 2.5, None], "b": {"c": "d"}}, "js": [1, "x"],
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "raw": base64.b64encode(b"\x00\xff\x10").decode(),
    "ints": [1, None, 3], "texts": ["a b", "c"], "dates": ["2025-01-01"], "r": "[1,10)",
    "tsr": "[2025-01-01T00:00:00+00:00,)", "er": "empty", "ip": "192.168.0.1/24", "nothing": None,
}


def test_every_kind_of_value_the_server_sends_becomes_plain_json(make_client, make_table, db):
    table = make_table(COLUMNS)
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.ALL)(recorder)
    with client:
        # ROW is not a format string: its braces are arrays and JSON.
        db.execute(sql.SQL("INSERT INTO {} VALUES ").format(sql.Identifier(table)) + sql.SQL(f"({ROW})"))
        db.execute(sql.SQL("UPDATE {} SET i = 43").format(sql.Identifier(table)))
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        db.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(sql.Identifier(table)))
        insert, update, delete, truncate = recorder.wait(4)

    line = event_to_json(insert)
    assert "\n" not in line
    decoded = json.loads(line)
    assert decoded == event_as_dict(insert)
    assert decoded["new"] == EXPECTED_NEW
    assert list(decoded) == ["table", "op", "lsn", "commit_lsn", "xid", "commit_time", "new"]
    assert decoded["table"] == f"public.{table}" and decoded["op"] == "INSERT"
    assert (decoded["lsn"], decoded["commit_lsn"], decoded["xid"]) == (insert.lsn, insert.commit_lsn, insert.xid)
    assert datetime.datetime.fromisoformat(decoded["commit_time"]) == insert.commit_time

    update_json = json.loads(event_to_json(update))
    assert update_json["op"] == "UPDATE"
    assert update_json["old"] == EXPECTED_NEW and update_json["new"] == dict(EXPECTED_NEW, i=43)
    delete_json = json.loads(event_to_json(delete))
    assert delete_json["op"] == "DELETE" and delete_json["old"]["i"] == 43 and "new" not in delete_json
    truncate_json = json.loads(event_to_json(truncate))
    assert {k: truncate_json[k] for k in ("op", "cascade", "restart_identity")} == {
        "op": "TRUNCATE", "cascade": True, "restart_identity": True}
    assert "old" not in truncate_json and "new" not in truncate_json


def test_an_unchanged_toasted_value_is_a_marker_object(make_client, make_table, db, unique):
    table = make_table("id int PRIMARY KEY, body text, n int")
    db.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN body SET STORAGE EXTERNAL").format(sql.Identifier(table)))
    recorder = Recorder()
    client = make_client(driver=Driver(DriverConfig(
        publication_slot_prefix=f"pub_{unique}", replication_slot=f"flash_{unique}", replica_identity_full=False,
    )))
    client.on(table, Operation.UPDATE)(recorder)
    with client:
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 0)").format(sql.Identifier(table)), ("y" * 100_000,))
        db.execute(sql.SQL("UPDATE {} SET n = 1").format(sql.Identifier(table)))
        (update,) = recorder.wait(1)
    assert update.new["body"] is UNCHANGED_TOAST
    assert json.loads(event_to_json(update))["new"] == {"id": 1, "body": UNCHANGED_TOAST_JSON, "n": 1}
    assert json.loads(event_to_json(update))["old"] is None


def test_values_json_cannot_write_as_they_are():
    assert json_value(math.inf) == "Infinity" and json_value(-math.inf) == "-Infinity"
    assert json_value(math.nan) == "NaN"
    assert json_value(Decimal("1E+3")) == "1E+3"  # exactly as the server wrote it
    assert json_value(datetime.timedelta(0)) == "PT0S"
    assert json_value(datetime.timedelta(days=-1, seconds=1)) == "-PT23H59M59S"
    assert json_value(datetime.timedelta(microseconds=1)) == "PT0.000001S"
    assert json_value((1, b"\x01", {2: None})) == [1, "AQ==", {"2": None}]
    assert json_value(object.__new__(type("Other", (), {"__str__": lambda self: "other"}))) == "other"
    event = InsertEvent(new={"body": UNCHANGED_TOAST}, table="public.t")
    assert json.loads(event_to_json(event))["new"]["body"] == {"unchanged_toast": True}
