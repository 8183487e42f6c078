"""ALTER TABLE on a listened table while streaming: the next events use the new shape."""

import decimal

from psycopg2 import sql

from flash_wal import Operation

from tests.support.recorder import Recorder


def test_add_drop_and_retype_columns_mid_stream(make_client, make_table, db, unique):
    table = make_table("id int PRIMARY KEY, price int, note text")
    t = sql.Identifier(table)
    mood = f"{unique}_mood"
    recorder = Recorder()
    client = make_client()
    client.on(table, Operation.INSERT)(recorder)
    with client:
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 10, 'a')").format(t))
        db.execute(sql.SQL("CREATE TYPE {} AS ENUM ('sad', 'happy')").format(sql.Identifier(mood)))
        db.execute(sql.SQL("ALTER TABLE {} ADD COLUMN mood {}, ADD COLUMN tags text[]").format(t, sql.Identifier(mood)))
        db.execute(sql.SQL("INSERT INTO {} VALUES (2, 20, 'b', 'happy', '{{x,y}}')").format(t))
        db.execute(sql.SQL("ALTER TABLE {} DROP COLUMN note").format(t))
        db.execute(sql.SQL("INSERT INTO {} (id, price, mood) VALUES (3, 30, 'sad')").format(t))
        db.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN price TYPE numeric(8, 2)").format(t))
        db.execute(sql.SQL("INSERT INTO {} (id, price) VALUES (4, 40.5)").format(t))
        rows = [e.new for e in recorder.wait(4)]
    db.execute(sql.SQL("DROP TABLE {}").format(t))
    db.execute(sql.SQL("DROP TYPE {}").format(sql.Identifier(mood)))
    assert rows == [
        {"id": 1, "price": 10, "note": "a"},
        {"id": 2, "price": 20, "note": "b", "mood": "happy", "tags": ["x", "y"]},
        {"id": 3, "price": 30, "mood": "sad", "tags": None},
        {"id": 4, "price": decimal.Decimal("40.50"), "mood": None, "tags": None},
    ]
