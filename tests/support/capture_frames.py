"""Record pgoutput frames from a real server as test fixtures.

    python -m tests.support.capture_frames [DSN]     # default: start an embedded PostgreSQL 18
    FLASH_WAL_TEST_PG_BIN=/usr/lib/postgresql/15/bin python -m tests.support.capture_frames

Writes tests/support/frames/pg<major>.json: the scenario's frames (hex payload and the
XLogData data_start), read with the highest protocol version the server supports.
tests/unit/test_captured_frames.py parses them and checks what they say.
"""

import json
import os
import select
import sys
import time

import psycopg2
import psycopg2.extras

SCENARIO = [
    "CREATE TYPE capture_mood AS ENUM ('sad', 'happy')",
    "CREATE TABLE capture (id int PRIMARY KEY, title text, body text, mood capture_mood, price numeric(6,2))",
    "ALTER TABLE capture ALTER COLUMN body SET STORAGE EXTERNAL",
    "CREATE TABLE capture_key (id int PRIMARY KEY, note text)",
    "CREATE PUBLICATION capture_pub FOR TABLE capture, capture_key",
    "ALTER TABLE capture REPLICA IDENTITY FULL",
    None,  # the slot is created here
    "INSERT INTO capture VALUES (1, 'one', repeat('x', 10000), 'happy', 9.99), (2, NULL, NULL, NULL, NULL)",
    "UPDATE capture SET title = 'uno' WHERE id = 1",
    "DELETE FROM capture WHERE id = 2",
    "INSERT INTO capture_key VALUES (1, 'k')",
    "UPDATE capture_key SET note = 'changed' WHERE id = 1",
    "UPDATE capture_key SET id = 2 WHERE id = 1",
    "DELETE FROM capture_key",
    "TRUNCATE capture, capture_key RESTART IDENTITY CASCADE",
    "SELECT pg_logical_emit_message(false, 'capture', 'not transactional')",
    "BEGIN; SELECT pg_logical_emit_message(true, 'capture', '\\x00ff'::bytea); INSERT INTO capture_key VALUES (5, 'm'); COMMIT",
]
END_MARK = b"capture-end"


def protocol_version(version_num: int) -> int:
    if version_num < 140000:
        raise SystemExit("capturing needs PostgreSQL 14 or later (logical decoding messages)")
    return 4 if version_num >= 160000 else 3 if version_num >= 150000 else 2


def capture(dsn: str) -> dict:
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    cursor = admin.cursor()
    cursor.execute("SHOW server_version_num")
    version = int(cursor.fetchone()[0])
    repl = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    rcur = repl.cursor()
    for statement in SCENARIO:
        if statement is None:
            rcur.execute("CREATE_REPLICATION_SLOT capture_slot TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT")
        else:
            cursor.execute(statement)
    cursor.execute("SELECT pg_logical_emit_message(false, 'capture', %s::bytea)", (END_MARK,))
    options = {"proto_version": str(protocol_version(version)), "publication_names": "capture_pub", "messages": "true"}
    rcur.start_replication(slot_name="capture_slot", decode=False, options=options)
    frames = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = rcur.read_message()
        if message is None:
            select.select([rcur], [], [], max(0.0, deadline - time.monotonic()))
            continue
        if END_MARK in message.payload:
            break
        frames.append({"data_start": message.data_start, "payload": message.payload.hex()})
    else:
        raise SystemExit("the scenario's frames did not all arrive within 30 s")
    repl.close()
    for statement in ["DROP PUBLICATION capture_pub", "DROP TABLE capture, capture_key", "DROP TYPE capture_mood"]:
        cursor.execute(statement)
    admin.close()
    return {"server_version_num": version, "protocol_version": int(options["proto_version"]), "frames": frames}


def main() -> None:
    server = None
    if len(sys.argv) > 1:
        dsn = sys.argv[1]
    else:
        from flash_wal.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(os.environ.get("FLASH_WAL_TEST_PG_BIN") or None).start()
        dsn = server.dsn
    try:
        result = capture(dsn)
    finally:
        if server is not None:
            server.stop()
    path = os.path.join(os.path.dirname(__file__), "frames", f"pg{result['server_version_num'] // 10000}.json")
    with open(path, "w") as out:
        json.dump(result, out, indent=1)
    print(f"wrote {len(result['frames'])} frames to {path}")


if __name__ == "__main__":
    main()
