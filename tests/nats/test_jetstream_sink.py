"""JetStreamSink and flash-wal pipe against a real 3-node JetStream cluster (3 replicas)."""

import json
import signal
import sys

import pytest

from flash_wal import ConfigurationError, Operation
from flash_wal.event_json import event_to_json

from tests.support.nats_cluster import read_stream
from tests.support.recorder import Recorder

pytest.importorskip("nats", reason="nats-py is not installed (the [nats] extra)")
from flash_wal.contrib.nats import JetStreamSink  # noqa: E402


def test_every_operation_arrives_with_its_subject_body_and_header(jetstream, make_client, make_table, db):
    cluster, stream, prefix = jetstream
    table = make_table("id int PRIMARY KEY, title text, price numeric, tags text[], meta jsonb, at timestamptz")
    client = make_client()
    sink = JetStreamSink(cluster.urls, stream, subject_prefix=prefix)
    sink.attach(client, table, Operation.ALL)
    seen = Recorder()
    client.on(table, Operation.ALL)(seen)  # the same events, as a plain callback gets them
    client.start()
    db.execute(f"INSERT INTO {table} VALUES (1, 'a', 9.50, '{{x,y}}', '{{\"k\": [1]}}', '2026-01-01T00:00:00Z')")
    db.execute(f"UPDATE {table} SET title = 'b' WHERE id = 1")
    db.execute(f"UPDATE {table} SET id = 2 WHERE id = 1")  # a key change: DELETE then INSERT
    db.execute(f"DELETE FROM {table} WHERE id = 2")
    db.execute(f"TRUNCATE {table}")
    events = seen.wait(6)
    messages = read_stream(cluster.urls, stream, expected=6)
    assert [json.loads(body) for _, body, _ in messages] == [json.loads(event_to_json(e)) for e in events]
    assert [body.decode() for _, body, _ in messages] == [event_to_json(e) for e in events]
    ops = ["insert", "update", "delete", "insert", "delete", "truncate"]
    assert [subject for subject, _, _ in messages] == [f"{prefix}.public.{table}.{op}" for op in ops]
    ids = [headers["Nats-Msg-Id"] for _, _, headers in messages]
    assert len(set(ids)) == 6
    slot = client.driver.config.replication_slot
    assert all(msg_id.startswith(f"{slot}:public.{table}:") for msg_id in ids)
    assert ids[2].endswith(":0") and ids[3].endswith(":1")  # the two halves of the key change
    assert ids[2].rsplit(":", 1)[0] == ids[3].rsplit(":", 1)[0]


def test_each_subject_holds_its_events_in_commit_order(jetstream, make_client, make_table, db):
    cluster, stream, prefix = jetstream
    tables = [make_table("id int PRIMARY KEY, n int") for _ in range(2)]
    client = make_client()
    sink = JetStreamSink(cluster.urls, stream, subject_prefix=prefix, max_pending=64)
    for table in tables:
        sink.attach(client, table, Operation.INSERT | Operation.UPDATE)
    client.start()
    for round_ in range(40):
        for table in tables:
            db.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series({round_ * 10}, {round_ * 10 + 9}) g")
            db.execute(f"UPDATE {table} SET n = {round_} WHERE id >= {round_ * 10}")
    messages = read_stream(cluster.urls, stream, expected=2 * 40 * (10 + sum(range(400, 0, -10)) // 40))
    by_subject = {}
    for subject, body, _ in messages:
        by_subject.setdefault(subject, []).append(json.loads(body))
    assert len(by_subject) == 4
    for subject, bodies in by_subject.items():
        positions = [(body["commit_lsn"], body["lsn"]) for body in bodies]
        assert positions == sorted(positions), subject
        assert len(set(positions)) == len(positions)


def test_a_missing_stream_or_subject_is_a_configuration_error(jetstream, make_client, make_table):
    cluster, stream, prefix = jetstream
    table = make_table()
    with pytest.raises(ConfigurationError, match="no JetStream stream 'NOPE'"):
        JetStreamSink(cluster.urls, "NOPE", subject_prefix=prefix).attach(make_client(), table)
    with pytest.raises(ConfigurationError, match="takes the subjects"):
        JetStreamSink(cluster.urls, stream, subject_prefix="elsewhere").attach(make_client(), table)


def pipe_argv(dsn, cluster, stream, prefix, table, *extra):
    argv = [sys.executable, "-m", "flash_wal", "pipe", "--dsn", dsn, "--table", table, "--stream", stream,
            "--subject-prefix", prefix]
    for url in cluster.urls:
        argv += ["--to", url]
    return argv + list(extra)


def test_pipe_streams_and_exits_0_on_sigterm(jetstream, make_table, db, dsn, spawn, unique):
    cluster, stream, prefix = jetstream
    table = make_table()
    pipe = spawn(pipe_argv(dsn, cluster, stream, prefix, table, "--slot", f"p_{unique}", "--prefix", f"pp_{unique}"))
    line = pipe.wait_output("flash-wal pipe: publishing", timeout=60)
    assert f"-> JetStream stream {stream}" in line
    db.execute(f"INSERT INTO {table} (title) VALUES ('x')")
    messages = read_stream(cluster.urls, stream, expected=1)
    assert json.loads(messages[0][1])["new"]["title"] == "x"
    pipe.signal_group(signal.SIGTERM)
    assert pipe.wait_exit() == 0, pipe.output
    assert len([l for l in pipe.lines if l.strip()]) == 1, pipe.output


def test_pipe_creates_the_stream_when_asked(nats_cluster, make_table, db, dsn, spawn, unique):
    table, stream, prefix = make_table(), f"NEW_{unique}".upper(), f"new_{unique}"
    argv = pipe_argv(dsn, nats_cluster, stream, prefix, table, "--slot", f"p_{unique}", "--prefix", f"pp_{unique}")
    missing = spawn(argv)
    assert missing.wait_exit() == 1
    assert missing.lines == [f"flash-wal: error: there is no JetStream stream {stream!r} on "
                             f"{', '.join(nats_cluster.urls)}: create it (or use --create-stream)"]
    pipe = spawn(argv + ["--create-stream", "--replicas", "3", "--duplicate-window", "30"])
    pipe.wait_output("flash-wal pipe: publishing", timeout=60)
    db.execute(f"INSERT INTO {table} (title) VALUES ('y')")
    assert read_stream(nats_cluster.urls, stream, expected=1)[0][0] == f"{prefix}.public.{table}.insert"
    pipe.signal_group(signal.SIGTERM)
    assert pipe.wait_exit() == 0, pipe.output


@pytest.mark.parametrize("bad", [["--to", "localhost:4222"], ["--replicas", "0"]])
def test_pipe_bad_input_is_one_line_and_status_2(bad, dsn, spawn):
    argv = [sys.executable, "-m", "flash_wal", "pipe", "--dsn", dsn, "--table", "t", "--stream", "S",
            "--to", "nats://127.0.0.1:1"] + bad
    process = spawn(argv)
    assert process.wait_exit() == 2
    assert len(process.lines) == 1 and process.lines[0].startswith("flash-wal pipe: error:")
