"""Callbacks that return a concurrent.futures.Future: done when the future is (the hook
flash_wal.contrib.nats relies on to acknowledge only what the broker acknowledged)."""

from concurrent.futures import Future
from datetime import datetime, timezone

from flash_wal import Listener, Operation
from flash_wal.dispatcher import Dispatcher
from flash_wal.table_name import TableName

from tests.support.waiting import wait_for

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
TABLE = TableName("public", "t")


class Later:
    """A callback returning one unfinished future per event."""

    def __init__(self):
        self.futures = {}
        self.order = []

    def __call__(self, event):
        future = Future()
        self.futures[event.new["id"]] = future
        self.order.append(event.new["id"])
        return future


def dispatcher_for(callback, on_error=None):
    dispatcher = Dispatcher(on_error=on_error)
    listener = Listener(table="t")
    listener.on(Operation.INSERT, callback)
    dispatcher.attach(listener)
    return dispatcher


def transaction(dispatcher, commit_lsn, *row_ids):
    txn = dispatcher.begin(commit_lsn, 1, NOW)
    for offset, row_id in enumerate(row_ids):
        dispatcher.change(txn, Operation.INSERT, TABLE, commit_lsn - 10 + offset, None, {"id": row_id})
    dispatcher.commit(txn, commit_lsn + 1)


def test_a_transaction_is_acknowledged_only_once_every_future_is_done():
    later = Later()
    dispatcher = dispatcher_for(later)
    transaction(dispatcher, 100, 1, 2)
    transaction(dispatcher, 200, 3)
    # The worker does not wait for a future: every callback was called, in commit order.
    wait_for(lambda: later.order == [1, 2, 3], what="all callbacks called")
    assert dispatcher.queued_events == 3  # the events count as queued until their futures are done
    later.futures[3].set_result(None)
    later.futures[1].set_result(None)
    assert dispatcher.acked_lsn == 0  # row 2 of the first transaction is not done
    later.futures[2].set_result(None)
    wait_for(lambda: dispatcher.acked_lsn == 201, what="both transactions acknowledged, in order")
    assert dispatcher.queued_events == 0
    assert dispatcher.events_delivered == 3
    dispatcher.close()


def test_a_failed_future_is_a_failed_callback():
    later, failures = Later(), []
    dispatcher = dispatcher_for(later, on_error=lambda exc, event: failures.append((exc, event.new["id"])))
    transaction(dispatcher, 100, 1)
    wait_for(lambda: 1 in later.futures, what="the callback")
    problem = RuntimeError("broker said no")
    later.futures[1].set_exception(problem)
    wait_for(lambda: dispatcher.acked_lsn == 101, what="acknowledged as a raised exception would be")
    assert failures == [(problem, 1)]
    assert dispatcher.callbacks_failed == 1
    dispatcher.close()


def test_a_cancelled_future_keeps_its_transaction_unacknowledged():
    later = Later()
    dispatcher = dispatcher_for(later)
    transaction(dispatcher, 100, 1, 2)
    transaction(dispatcher, 200, 3)
    wait_for(lambda: len(later.futures) == 3, what="all callbacks")
    later.futures[1].set_result(None)
    later.futures[2].cancel()
    later.futures[3].set_result(None)
    assert dispatcher.drain(10)
    assert dispatcher.acked_lsn == 0  # row 2 was never delivered: nothing from there on is acknowledged
    assert dispatcher.events_delivered == 2
    dispatcher.close()


def test_a_callback_returning_anything_else_is_done_when_it_returns():
    dispatcher = dispatcher_for(lambda event: "done")
    transaction(dispatcher, 100, 1)
    wait_for(lambda: dispatcher.acked_lsn == 101, what="acknowledged")
    dispatcher.close()
