"""The acknowledgement logic without a server: status updates, the ack tracker, the
dispatcher's batches, and the translator across interrupted sessions and streamed
replays. Frames are built with the protocol tests' encoder."""

import threading
from datetime import datetime, timezone

import pytest

from flash_wal import Listener, Operation
from flash_wal.dispatcher import Dispatcher
from flash_wal.drivers.wal_logical.feedback import StatusPolicy, heartbeat_interval
from flash_wal.drivers.wal_logical.translator import ChangeTranslator
from flash_wal.pgoutput import Begin, Commit, Insert, PgOutputParser, StreamCommit, StreamStart, StreamStop
from flash_wal.table_name import TableName

from tests.support.waiting import wait_for
from tests.support.encoder import encode

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
TABLE = TableName("public", "t")


# --- StatusPolicy -----------------------------------------------------------------------

def test_position_is_what_completed_unless_nothing_is_unfinished():
    policy = StatusPolicy(heartbeat_interval=10)
    assert policy.position(acked_lsn=100, settled=False, server_wal_end=500) == 100
    assert policy.position(acked_lsn=100, settled=True, server_wal_end=500) == 500
    assert policy.position(acked_lsn=600, settled=True, server_wal_end=500) == 600


def test_position_never_goes_back():
    policy = StatusPolicy(heartbeat_interval=10)
    policy.sent(now=0, position=500)
    assert policy.position(acked_lsn=100, settled=False, server_wal_end=0) == 500


def test_updates_are_due_on_request_on_heartbeat_and_soon_after_progress():
    policy = StatusPolicy(heartbeat_interval=10, busy_interval=0.5)
    policy.sent(now=100, position=50)
    assert not policy.due(100.1, position=50, reply_requested=False)
    assert policy.due(100.1, position=50, reply_requested=True)
    assert not policy.due(100.2, position=60, reply_requested=False)  # moved, but just sent
    assert policy.due(100.5, position=60, reply_requested=False)
    assert not policy.due(109, position=50, reply_requested=False)  # nothing moved
    assert policy.due(110, position=50, reply_requested=False)  # the heartbeat


def test_the_heartbeat_comes_three_times_per_wal_sender_timeout_at_most_every_status_interval():
    assert heartbeat_interval(10.0, 60_000) == 10.0
    assert heartbeat_interval(10.0, 1_000) == pytest.approx(1 / 3)
    assert heartbeat_interval(10.0, 0) == 10.0  # no timeout on the server


def test_progress_brings_the_next_update_forward():
    policy = StatusPolicy(heartbeat_interval=10, busy_interval=0.5)
    policy.sent(now=100, position=50)
    assert policy.next_at == 110
    policy.moved()
    assert policy.next_at == 100.5
    assert policy.wait_time(100.2) == pytest.approx(0.3)


# --- the tracker and the dispatcher -----------------------------------------------------

class Gate:
    """A callback that blocks on chosen rows until released."""

    def __init__(self, *blocked_ids):
        self.blocked = {row_id: threading.Event() for row_id in blocked_ids}
        self.seen = []
        self.entered = []
        self.lock = threading.Lock()

    def __call__(self, event):
        self.entered.append(event.new["id"])
        gate = self.blocked.get(event.new["id"])
        if gate is not None:
            assert gate.wait(10)
        with self.lock:
            self.seen.append(event.new["id"])

    def release(self, row_id):
        self.blocked[row_id].set()


def dispatcher_with(callback, max_parallel=1):
    dispatcher = Dispatcher()
    listener = Listener(table="t", max_parallel=max_parallel)
    listener.on(Operation.INSERT, callback)
    dispatcher.attach(listener)
    return dispatcher


def insert(dispatcher, txn, row_id, lsn):
    dispatcher.change(txn, Operation.INSERT, TABLE, lsn, None, {"id": row_id})


def test_acknowledgement_follows_commit_order_whatever_finishes_first():
    gate = Gate(1)
    dispatcher = dispatcher_with(gate, max_parallel=4)
    first, second = dispatcher.begin(100, 1, NOW), None
    insert(dispatcher, first, 1, 90)
    dispatcher.commit(first, 110)
    second = dispatcher.begin(200, 2, NOW)
    insert(dispatcher, second, 2, 190)
    dispatcher.commit(second, 210)
    wait_for(lambda: 2 in gate.seen, what="the second transaction's callback")
    assert dispatcher.acked_lsn == 0  # the first one still runs
    gate.release(1)
    wait_for(lambda: dispatcher.acked_lsn == 210, what="both acknowledged")
    dispatcher.close()


def test_an_abandoned_transaction_is_never_acknowledged_and_holds_nothing_back():
    gate = Gate()
    dispatcher = dispatcher_with(gate)
    lost = dispatcher.begin(100, 1, NOW)
    insert(dispatcher, lost, 1, 90)
    dispatcher.flush()
    dispatcher.abandon(lost)
    after = dispatcher.begin(200, 2, NOW)
    insert(dispatcher, after, 2, 190)
    dispatcher.commit(after, 210)
    wait_for(lambda: dispatcher.acked_lsn == 210, what="the later transaction acknowledged")
    assert dispatcher.settled
    dispatcher.close()


def test_the_transaction_after_an_abandoned_one_waits_for_its_own_callbacks():
    # The abandoned transaction's last batch was still being filled (no flush before
    # abandon): the next transaction's event must not join that batch, or it would have
    # nothing pending of its own and be acknowledged before its callback ran.
    gate = Gate(2)
    dispatcher = dispatcher_with(gate)
    lost = dispatcher.begin(100, 1, NOW)
    insert(dispatcher, lost, 1, 90)
    dispatcher.abandon(lost)
    after = dispatcher.begin(200, 2, NOW)
    insert(dispatcher, after, 2, 190)
    dispatcher.commit(after, 210)
    wait_for(lambda: 2 in gate.entered, what="the next transaction's callback to block")
    assert dispatcher.acked_lsn == 0
    gate.release(2)
    wait_for(lambda: dispatcher.acked_lsn == 210, what="the next transaction acknowledged once done")
    dispatcher.close()


def test_events_dropped_by_close_keep_their_transaction_unacknowledged():
    gate = Gate(1)
    dispatcher = dispatcher_with(gate)
    txn = dispatcher.begin(100, 1, NOW)
    for row_id in (1, 2, 3):
        insert(dispatcher, txn, row_id, 90 + row_id)
    dispatcher.commit(txn, 110)
    wait_for(lambda: gate.entered == [1], what="the callback of row 1 to block")
    dispatcher.close()
    gate.release(1)
    assert dispatcher.drain(10)
    assert gate.seen == [1]  # rows 2 and 3 never started
    assert dispatcher.acked_lsn == 0
    assert not dispatcher.settled



@pytest.mark.parametrize("kind", ["insert", "truncate"])
def test_a_change_read_after_close_keeps_its_transaction_unacknowledged(kind):
    # close() from a callback: the replication thread reads on to the Commit of the
    # transaction it is in. A change it skips then was never delivered.
    gate = Gate()
    dispatcher = Dispatcher()
    listener = Listener(table="t")
    listener.on(Operation.INSERT | Operation.TRUNCATE, gate)
    dispatcher.attach(listener)
    delivered = dispatcher.begin(100, 1, NOW)
    insert(dispatcher, delivered, 1, 90)
    dispatcher.commit(delivered, 110)
    wait_for(lambda: dispatcher.acked_lsn == 110, what="the first transaction acknowledged")
    txn = dispatcher.begin(200, 2, NOW)
    dispatcher.close()
    if kind == "insert":
        insert(dispatcher, txn, 2, 190)
    else:
        dispatcher.truncate(txn, TABLE, 190, False, False)
    dispatcher.commit(txn, 210)
    assert dispatcher.drain(10)
    assert gate.seen == [1]
    assert dispatcher.acked_lsn == 110
    assert not dispatcher.settled

# --- the translator ---------------------------------------------------------------------

class Decoder:
    table, table_text = TABLE, "public.t"

    def decode(self, values):
        return {"id": int(values[0])}


class Relations:
    def get(self, relid):
        return Decoder()

    def update(self, relation):
        pass


def frames(*messages):
    return [(message, encode(message)) for message in messages]


def feed(translator, messages, lsn=1):
    for message, payload in frames(*messages):
        replay = translator.handle(translator.parser.parse(payload), lsn, payload)
        if replay is not None:
            for _ in replay:
                pass


def rows(*ids, xid=None):
    return [Insert(xid, 1, (str(row_id).encode(),)) for row_id in ids]


def translator_with(dispatcher):
    return ChangeTranslator(dispatcher, Relations(), PgOutputParser(4), stream_buffer_bytes=1 << 20)


def test_a_transaction_interrupted_by_a_lost_connection_is_finished_once():
    gate = Gate(2)
    dispatcher = dispatcher_with(gate)
    translator = translator_with(dispatcher)
    begin = Begin(final_lsn=100, commit_time=NOW, xid=7)
    feed(translator, [begin, *rows(1, 2)])
    translator.interrupted()  # rows 1 and 2 are handed to the callback; row 2 blocks
    assert not translator.settled
    # The next session sends the whole transaction again, then a newer one.
    feed(translator, [begin, *rows(1, 2, 3), Commit(0, 100, 110, NOW)])
    feed(translator, [Begin(200, NOW, 8), *rows(4), Commit(0, 200, 210, NOW)])
    wait_for(lambda: gate.seen == [1], what="row 1 delivered")
    assert dispatcher.acked_lsn == 0  # row 2's callback still runs: nothing acknowledged
    gate.release(2)
    wait_for(lambda: dispatcher.acked_lsn == 210, what="both transactions acknowledged")
    assert gate.seen == [1, 2, 3, 4]  # once each, in order
    assert translator.received_lsn == 210 and translator.settled
    dispatcher.close()


def test_an_interrupted_transaction_that_is_not_sent_again_is_abandoned():
    gate = Gate()
    dispatcher = dispatcher_with(gate)
    translator = translator_with(dispatcher)
    feed(translator, [Begin(100, NOW, 7), *rows(1)])
    translator.interrupted()
    translator.new_slot()  # a new temporary slot starts after it
    feed(translator, [Begin(300, NOW, 9), *rows(5), Commit(0, 300, 310, NOW)])
    wait_for(lambda: dispatcher.acked_lsn == 310, what="the new slot's transaction acknowledged")
    assert gate.seen == [1, 5]
    dispatcher.close()


def test_interrupted_twice_before_catching_up_skips_what_was_delivered_the_first_time():
    gate = Gate()
    dispatcher = dispatcher_with(gate)
    translator = translator_with(dispatcher)
    begin = Begin(100, NOW, 7)
    feed(translator, [begin, *rows(1, 2, 3)])
    translator.interrupted()
    feed(translator, [begin, *rows(1)])  # lost again before row 3 came back
    translator.interrupted()
    feed(translator, [begin, *rows(1, 2, 3, 4), Commit(0, 100, 110, NOW)])
    wait_for(lambda: dispatcher.acked_lsn == 110, what="the transaction acknowledged")
    assert gate.seen == [1, 2, 3, 4]
    dispatcher.close()


def test_a_streamed_transaction_is_delivered_at_its_commit_one_frame_per_step():
    gate = Gate()
    dispatcher = dispatcher_with(gate)
    translator = translator_with(dispatcher)
    for message, payload in frames(StreamStart(xid=7, first_segment=True), *rows(1, 2, 3, xid=7), StreamStop()):
        assert translator.handle(translator.parser.parse(payload), 50, payload) is None
    assert not translator.settled  # held: nothing confirmed past it
    commit = StreamCommit(xid=7, flags=0, commit_lsn=100, end_lsn=110, commit_time=NOW)
    payload = encode(commit)
    replay = translator.handle(translator.parser.parse(payload), 100, payload)
    steps = sum(1 for _ in replay)
    assert steps == 3
    wait_for(lambda: dispatcher.acked_lsn == 110, what="the streamed transaction acknowledged")
    assert gate.seen == [1, 2, 3] and translator.settled and translator.received_lsn == 110
    dispatcher.close()


def test_a_streamed_transaction_in_progress_is_dropped_when_the_connection_goes():
    gate = Gate()
    dispatcher = dispatcher_with(gate)
    translator = translator_with(dispatcher)
    feed(translator, [StreamStart(xid=7, first_segment=True), *rows(1, 2, xid=7), StreamStop()])
    translator.interrupted()
    assert translator.settled  # the server sends it again from its start
    feed(translator, [StreamStart(xid=7, first_segment=True), *rows(1, 2, 3, xid=7), StreamStop(),
                      StreamCommit(7, 0, 100, 110, NOW)])
    wait_for(lambda: dispatcher.acked_lsn == 110, what="the streamed transaction acknowledged")
    assert gate.seen == [1, 2, 3]
    dispatcher.close()
