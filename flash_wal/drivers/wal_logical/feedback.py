"""What the server is told, and when: the status updates of a replication session.

No I/O here: the replication thread asks :class:`StatusPolicy` whether an update is
due and which position it carries, sends it, and says so.

The flushed position is the end of the newest transaction whose callbacks, and those
of every transaction before it, have returned (the ack tracker's ``acked_lsn``). When
nothing that was received is unfinished, it may be the server's WAL end from its last
keepalive instead, so that an idle slot, or one whose WAL holds only changes of other
tables, does not hold WAL back. It never goes back.

Updates go out:

- when the server asks for one (a keepalive with the reply flag);
- when the position moved and the last update is ``busy_interval`` old (20 ms), so
  that a session that never idles still has its acknowledgements confirmed at once,
  without one update per transaction when thousands complete each second (a crash
  redelivers what completed in the last 20 ms, besides what was still running);
- at least every ``heartbeat_interval``, moved or not, so that the server's
  ``wal_sender_timeout`` never ends a session that is busy replaying or waiting for
  callbacks.
"""

import math

__all__ = ["StatusPolicy", "heartbeat_interval"]


def heartbeat_interval(status_interval: float, wal_sender_timeout_ms: int) -> float:
    """How often to send status updates, moved or not.

    The server ends a session that has not answered for wal_sender_timeout; while the
    thread replays or waits for callbacks it reads no keepalive requests, so its
    unprompted updates must come often enough on their own: three per timeout.
    """
    if wal_sender_timeout_ms <= 0:
        return status_interval
    return min(status_interval, wal_sender_timeout_ms / 1000 / 3)


class StatusPolicy:
    def __init__(self, heartbeat_interval: float, busy_interval: float = 0.02) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.busy_interval = min(busy_interval, heartbeat_interval)
        self.sent_lsn = 0
        self.last_sent = -math.inf
        #: When the next update is due if nothing moves; lowered by :meth:`moved`.
        self.next_at = -math.inf

    def position(self, acked_lsn: int, settled: bool, server_wal_end: int) -> int:
        """The flushed position to report now.

        ``settled``: every frame received so far belongs to a transaction that has
        been acknowledged (none open, none held, none being replayed).
        """
        position = acked_lsn
        if settled and server_wal_end > position:
            position = server_wal_end
        return max(position, self.sent_lsn)

    def due(self, now: float, position: int, reply_requested: bool) -> bool:
        if reply_requested or now - self.last_sent >= self.heartbeat_interval:
            return True
        return position > self.sent_lsn and now - self.last_sent >= self.busy_interval

    def sent(self, now: float, position: int) -> None:
        self.sent_lsn = max(self.sent_lsn, position)
        self.last_sent = now
        self.next_at = now + self.heartbeat_interval

    def moved(self) -> None:
        """The acknowledged position advanced: an update is due within busy_interval.

        Called from whichever thread finished the transaction; only lowers a float.
        """
        soonest = self.last_sent + self.busy_interval
        if soonest < self.next_at:
            self.next_at = soonest

    def wait_time(self, now: float) -> float:
        """Seconds until :attr:`next_at`, for a thread that sleeps meanwhile."""
        return max(0.0, self.next_at - now)
