"""A durable backfill survives SIGKILL: killed twice mid-backfill of 200,000 rows, the
next start resumes after the last acknowledged chunk, every row arrives, far fewer than
twice the rows are read in all, and a completed backfill is not repeated."""

import os
import signal

from psycopg2 import sql

from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.consumer import RecordFile
from tests.support.processes import ConsumerProcess
from tests.support.waiting import wait_for

ROWS = 200_000
KILL_AT = (40_000, 60_000)  # rows each killed process has read, as the parent counts them


def test_killed_twice_mid_backfill_resumes(dsn, db, make_table, unique, tmp_path):
    table = make_table("id int PRIMARY KEY, title text")
    db.execute(sql.SQL("INSERT INTO {} SELECT g, 'row ' || g FROM generate_series(1, %s) g")
               .format(sql.Identifier(table)), (ROWS,))
    slot, prefix = f"bfr_{unique}", f"p_bfr_{unique}"
    record = RecordFile(str(tmp_path / "record"))
    options = ("--durable", "--backfill", "2000", "--record", record.path, "--no-fsync", "--status-interval", "1")
    reads_per_life = []
    try:
        for kill_at in KILL_AT:
            before = len(record.read())
            consumer = ConsumerProcess(dsn, table, slot, prefix, *options)
            consumer.wait_line("streaming", timeout=60)
            wait_for(lambda: len(record.read()) - before >= kill_at, timeout=120, what="rows read")
            os.kill(consumer.proc.pid, signal.SIGKILL)
            consumer.wait_exit()
            reads_per_life.append(len(record.read()) - before)
        before = len(record.read())
        consumer = ConsumerProcess(dsn, table, slot, prefix, *options)
        consumer.wait_output("backfilled", timeout=180)
        consumer.proc.send_signal(signal.SIGTERM)
        assert consumer.wait_exit() == 0
        reads_per_life.append(len(record.read()) - before)
        reads = [value for _pid, op, value, _lsn in record.read() if op == "R"]
        assert set(reads) == set(range(1, ROWS + 1))  # every row delivered
        assert len(reads) < 1.2 * ROWS, reads_per_life  # resumed, not read again from the first row
        assert all(count > 0 for count in reads_per_life), reads_per_life
        # Completed: the next start does not read the table again.
        consumer = ConsumerProcess(dsn, table, slot, prefix, *options)
        consumer.wait_output("backfilled", timeout=60)
        consumer.proc.send_signal(signal.SIGTERM)
        assert consumer.wait_exit() == 0
        assert len([1 for _pid, op, _v, _l in record.read() if op == "R"]) == len(reads)
        print(f"rows read per process: {reads_per_life}, in all {len(reads)} for {ROWS} rows")
    finally:
        Driver(DriverConfig(replication_slot=slot, publication_slot_prefix=prefix, durable=True)).drop(dsn)
