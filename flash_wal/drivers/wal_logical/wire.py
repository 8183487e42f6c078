"""A replication session's messages, read and written through libpq itself.

psycopg2's ``read_message()`` answers the server's keepalives on its own, and one of
its rules moves the flush position it reports up to the server's WAL end once the
position we gave is at or past the start of the last frame read. The frames of a
streamed block, and Relation frames (which carry no position at all), start before
positions already acknowledged, so that rule would confirm transactions whose
callbacks are still running. Here every status update carries exactly the position
the caller gives: the COPY BOTH messages go through the libpq that psycopg2 is linked
with, on the connection psycopg2 opened and started (``connection.pgconn_ptr``).

Only the replication thread uses a :class:`ReplicationWire`, and it does so only
after ``start_replication()``; psycopg2 is not called on that connection again except
to close it.
"""

import ctypes
import select
import struct
import time
from typing import Any, Callable, Optional, Tuple

import psycopg2
import psycopg2._psycopg
import psycopg2.errors

__all__ = ["ReplicationWire", "SessionEnded"]

_XLOG_DATA = struct.Struct(">QQq")  # data start, WAL end, send time (after b"w")
_KEEPALIVE = struct.Struct(">Qq?")  # WAL end, send time, reply requested (after b"k")
_STATUS = struct.Struct(">cQQQq?")  # b"r", written, flushed, applied, now, reply requested
_POSTGRES_EPOCH = 946684800  # 2000-01-01 in Unix seconds
_SQLSTATE = ord("C")  # PG_DIAG_SQLSTATE
_SEVERITY = ord("V")  # PG_DIAG_SEVERITY_NONLOCALIZED
_PRIMARY_MESSAGE = ord("M")  # PG_DIAG_MESSAGE_PRIMARY


_NoticeReceiver = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


def _load_libpq() -> Any:
    # The extension module resolves libpq's symbols from the very library it is linked
    # with, whether a wheel's bundled copy or the system's. PyDLL keeps the GIL across
    # the calls: none of them waits, and giving the GIL up for each frame would leave the
    # replication thread queueing behind the callbacks' threads for it.
    libpq = ctypes.PyDLL(psycopg2._psycopg.__file__)
    signatures = {
        # The two called for every frame take their arguments as ready ctypes objects:
        # without argtypes ctypes converts nothing, which halves the cost of a call.
        "PQgetCopyData": (ctypes.c_int, None),
        "PQfreemem": (None, None),
        "PQputCopyData": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]),
        "PQputCopyEnd": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
        "PQflush": (ctypes.c_int, [ctypes.c_void_p]),
        "PQconsumeInput": (ctypes.c_int, [ctypes.c_void_p]),
        "PQerrorMessage": (ctypes.c_char_p, [ctypes.c_void_p]),
        "PQgetResult": (ctypes.c_void_p, [ctypes.c_void_p]),
        "PQresultErrorField": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int]),
        "PQresultErrorMessage": (ctypes.c_char_p, [ctypes.c_void_p]),
        "PQclear": (None, [ctypes.c_void_p]),
        "PQsetNoticeReceiver": (ctypes.c_void_p, [ctypes.c_void_p, _NoticeReceiver, ctypes.c_void_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(libpq, name)
        function.restype, function.argtypes = restype, argtypes
    return libpq


_libpq = _load_libpq()


class SessionEnded(psycopg2.OperationalError):
    """The server ended the session without an error: it is shutting down."""


class Received:
    """What the client read from the replication connection, over every session: what
    ``publish`` and row filters save shows here (the server's own statistics count
    changes before publications filter them)."""

    __slots__ = ("bytes", "frames")

    def __init__(self) -> None:
        #: Bytes of every replication message read (changes and keepalives, with headers).
        self.bytes = 0
        #: XLogData frames read: one per pgoutput message.
        self.frames = 0


class ReplicationWire:
    """Reads the XLogData frames of a started replication and sends status updates.

    :meth:`read` returns ``(data_start, payload)`` or None when nothing is waiting;
    keepalives are consumed on the way and leave their WAL end in :attr:`server_wal_end`
    and, when the server asks for an answer, :attr:`reply_requested` set. The server's
    warnings go to ``on_warning(message)`` as they arrive between frames.
    """

    def __init__(self, connection: Any, on_warning: Callable[[str], None], received: "Optional[Received]" = None) -> None:
        self._connection = connection  # kept alive: it owns the PGconn
        self._pgconn = ctypes.c_void_p(connection.pgconn_ptr)
        # Slicing a char pointer copies the frame into bytes in one step, at a quarter
        # of the cost of ctypes.string_at.
        self._buffer = ctypes.POINTER(ctypes.c_char)()
        self._buffer_ref = ctypes.byref(self._buffer)
        self._async = ctypes.c_int(1)
        self.server_wal_end = 0
        self.reply_requested = False
        self.received = Received() if received is None else received
        self._on_warning = on_warning
        # Kept as an attribute: libpq holds only the C pointer.
        self._notice_receiver = _NoticeReceiver(self._notice)
        _libpq.PQsetNoticeReceiver(self._pgconn, self._notice_receiver, None)

    def _notice(self, _arg: Any, result: Any) -> None:
        severity = _libpq.PQresultErrorField(result, _SEVERITY) or b""
        message = _libpq.PQresultErrorField(result, _PRIMARY_MESSAGE) or b""
        if severity == b"WARNING":
            self._on_warning(message.decode("utf-8", "replace"))

    def fileno(self) -> int:
        descriptor: int = self._connection.fileno()
        return descriptor

    def read(self) -> Optional[Tuple[int, bytes]]:
        pgconn, buffer, buffer_ref, libpq = self._pgconn, self._buffer, self._buffer_ref, _libpq
        get_copy_data, free, nonblocking = libpq.PQgetCopyData, libpq.PQfreemem, self._async
        received = self.received
        consumed = False
        while True:
            length = get_copy_data(pgconn, buffer_ref, nonblocking)
            if length > 0:
                frame: bytes = buffer[:length]  # type: ignore[assignment]  # a c_char pointer slices to bytes
                free(buffer)
                received.bytes += length
                kind = frame[0]
                if kind == 0x77:  # b"w": XLogData
                    received.frames += 1
                    return _XLOG_DATA.unpack_from(frame, 1)[0], frame[25:]
                if kind == 0x6B:  # b"k": primary keepalive
                    wal_end, _sent, reply = _KEEPALIVE.unpack_from(frame, 1)
                    if wal_end > self.server_wal_end:
                        self.server_wal_end = wal_end
                    self.reply_requested = self.reply_requested or reply
                    continue
                raise psycopg2.OperationalError(f"unexpected replication message type {frame[:1]!r}")
            if length == 0:
                if consumed:
                    return None
                # Read the socket only once nothing complete is buffered, as psycopg2
                # does, so a fast server cannot grow libpq's buffer without bound.
                if not libpq.PQconsumeInput(pgconn):
                    raise self._connection_error()
                consumed = True
                continue
            if length == -1:
                raise self._end_of_session()
            raise self._connection_error()

    def send_status(self, written: int, flushed: int, *, reply: bool = False) -> None:
        """Tell the server how far we have got; exactly these positions, nothing more."""
        now = int((time.time() - _POSTGRES_EPOCH) * 1_000_000)
        message = _STATUS.pack(b"r", written, flushed, flushed, now, reply)
        if _libpq.PQputCopyData(self._pgconn, message, len(message)) != 1 or _libpq.PQflush(self._pgconn) != 0:
            raise self._connection_error()
        self.reply_requested = False

    def end(self, timeout: float) -> bool:
        """End the session the way the protocol does, after the last status update.

        Closing a socket that still holds unread frames resets the connection, and a
        walsender busy sending finds that out on its next write and exits without
        reading what came before: the last update would be lost. A CopyDone is read
        only after every update sent before it, and the server answers it by ending
        its COPY; the frames still on their way are read and dropped meanwhile (none
        of them is acknowledged). True once the server has ended its side.
        """
        pgconn, libpq = self._pgconn, _libpq
        if libpq.PQputCopyEnd(pgconn, None) != 1 or libpq.PQflush(pgconn) != 0:
            return False
        deadline = time.monotonic() + timeout
        buffer_ref = self._buffer_ref
        while True:
            length = libpq.PQgetCopyData(pgconn, buffer_ref, self._async)
            if length > 0:
                libpq.PQfreemem(self._buffer)
                continue
            if length == -1:
                self._end_of_session()  # reads the results, leaving the connection idle
                return True
            if length < -1:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            select.select([self.fileno()], [], [], remaining)
            if not libpq.PQconsumeInput(pgconn):
                return False

    def _connection_error(self) -> psycopg2.Error:
        message = (_libpq.PQerrorMessage(self._pgconn) or b"").decode("utf-8", "replace").strip()
        return psycopg2.OperationalError(message or "the replication connection was lost")

    def _end_of_session(self) -> psycopg2.Error:
        """The COPY ended: the server's reason, as the psycopg2 error of its SQLSTATE."""
        error: Optional[psycopg2.Error] = None
        while True:
            result = _libpq.PQgetResult(self._pgconn)
            if not result:
                break
            try:
                if error is None:
                    sqlstate = _libpq.PQresultErrorField(result, _SQLSTATE)
                    if sqlstate:
                        message = (_libpq.PQresultErrorMessage(result) or b"").decode("utf-8", "replace").strip()
                        error = _error_class(sqlstate.decode("ascii"))(message)
            finally:
                _libpq.PQclear(result)
        return error or SessionEnded("the server ended the replication session (no COPY in progress)")


def _error_class(sqlstate: str) -> type:
    try:
        return psycopg2.errors.lookup(sqlstate)
    except KeyError:
        return psycopg2.DatabaseError
