"""A progress bar of the running backfills on standard error, when it is a terminal:
rows/total, rate and time left, redrawn in place until every backfill has ended."""

import threading
from typing import Any, Callable, Dict, List, TextIO

__all__ = ["BackfillProgress", "progress_line"]

_WIDTH = 24


def progress_line(backfill: Dict[str, Any]) -> str:
    """One backfill's line: ``public.posts [#####.....] 12,000/50,000 rows 8,410/s 5 s left``."""
    rows, total, seconds = backfill["rows"], backfill["total"], backfill["seconds"]
    rate = rows / seconds if seconds > 0 else 0.0
    if total:
        done = min(rows / total, 1.0)
        bar = "#" * int(done * _WIDTH) + "." * (_WIDTH - int(done * _WIDTH))
        left = f", {max(total - rows, 0) / rate:.0f} s left" if rate and backfill["state"] == "running" else ""
        amount = f"[{bar}] {rows:,}/{total:,} rows"
    else:
        amount, left = f"{rows:,} rows", ""
    return f"{backfill['table']} {amount} {rate:,.0f}/s{left} ({backfill['state']})"


class BackfillProgress:
    """Draws ``stats()["backfills"]`` every ``interval`` seconds from a thread of its own."""

    def __init__(self, stats: Callable[[], Dict[str, Any]], stream: TextIO, interval: float = 0.2) -> None:
        self._stats, self._stream, self._interval = stats, stream, interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flash_wal-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(1)

    def _run(self) -> None:
        shown: List[str] = []
        while not self._stopping.wait(self._interval):
            backfills = self._stats().get("backfills") or []
            lines = [progress_line(backfill) for backfill in backfills]
            if lines != shown:
                self._stream.write("\r\x1b[K" + " | ".join(lines))
                self._stream.flush()
                shown = lines
            if backfills and all(b["state"] != "running" for b in backfills):
                self._stream.write("\n")
                self._stream.flush()
                return
