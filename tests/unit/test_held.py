"""HeldTransaction reads its spilled frames back in time linear in their size."""

import tempfile

import pytest

from flash_wal.drivers.wal_logical import held
from flash_wal.drivers.wal_logical.held import HeldTransaction

MiB = 1 << 20


class CountedFile:
    """A file whose read() calls and the bytes they return are counted."""

    def __init__(self, file) -> None:
        self._file = file
        self.reads = 0
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.reads += 1
        self.bytes_read += len(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self._file, name)


@pytest.fixture
def counted_files(monkeypatch):
    opened = []
    real = tempfile.TemporaryFile

    def temporary_file(*args, **kwargs):
        opened.append(CountedFile(real(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(held.tempfile, "TemporaryFile", temporary_file)
    return opened


def read_back(frame_bytes: int, counted_files) -> CountedFile:
    """Spill a small frame, one of ``frame_bytes`` and another small one; read them
    back and check them; returns the counted file."""
    big = bytes(range(256)) * (frame_bytes // 256)
    txn = HeldTransaction(xid=7, limit_bytes=64 * 1024)
    try:
        txn.append(0, 1, b"first")
        txn.append(0, 2, big)
        txn.append(0, 3, b"last")
        assert txn.spilled
        counted = counted_files[-1]
        frames = list(txn.frames())
        assert [lsn for lsn, _ in frames] == [1, 2, 3]
        assert frames[0][1] == b"first" and frames[2][1] == b"last"
        assert frames[1][1] == big
        return counted
    finally:
        txn.close()


def test_a_large_spilled_frame_is_read_once_in_a_constant_number_of_reads(counted_files):
    small = read_back(16 * MiB, counted_files)
    large = read_back(64 * MiB, counted_files)
    # Every byte of the file is read once, and the number of reads does not grow
    # with the frame: no re-reading and no piecing a frame together chunk by chunk.
    headers = 3 * held._RECORD.size
    assert small.bytes_read == headers + 16 * MiB + len(b"first") + len(b"last")
    assert large.bytes_read == headers + 64 * MiB + len(b"first") + len(b"last")
    assert large.reads == small.reads <= 2 * 3 + 1


def test_rolled_back_subtransactions_are_skipped_in_the_file_too(counted_files):
    txn = HeldTransaction(xid=7, limit_bytes=16)
    try:
        for lsn, subxid in enumerate([7, 8, 7, 8, 9], start=1):
            txn.append(subxid, lsn, b"frame %d" % lsn)
        txn.abort_subtransaction(8)
        assert txn.spilled
        assert list(txn.frames()) == [(1, b"frame 1"), (3, b"frame 3"), (5, b"frame 5")]
    finally:
        txn.close()
