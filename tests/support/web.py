"""What the Django and Flask tests share: web workers and dev servers with autostart."""

import signal
from typing import Callable

from .processes import WatchedProcess, http_get_body

__all__ = ["run_two_autostarted_workers", "run_command_for_one_row", "run_dev_server_with_reloader"]


def run_two_autostarted_workers(
    start_worker: Callable[[], WatchedProcess], slot: str, insert_row: Callable[[str], None]
) -> None:
    """Two web workers of an app whose flash_wal starts automatically: the first
    listens, the second logs that the slot is in use and serves all the same; both
    exit with status 0 on SIGTERM. The app's listener prints ``new post: <title>``."""
    workers = [start_worker()]
    try:
        workers[0].wait_output("serving")
        workers[0].wait_output("started automatically in process")
        workers.append(start_worker())
        warning = workers[1].wait_output("not listening in this process")
        assert f"replication slot '{slot}' is in use by another running instance" in warning
        assert http_get_body(int(workers[1].wait_output("serving").split()[1])) == b"ok"
        insert_row("one worker")
        workers[0].wait_output("new post: one worker")
    finally:
        for worker in workers:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait_exit() == 0, worker.output
    assert "new post: one worker" not in workers[1].output


def run_command_for_one_row(command: WatchedProcess, insert_row: Callable[[str], None]) -> None:
    """A ``flash_wal``/``flash-wal run`` command until its listener printed
    ``new post: <title>`` for one row, then SIGTERM; it must exit with status 0."""
    try:
        command.wait_output("flash_wal: streaming")
        insert_row("one post")
        command.wait_output("new post: one post")
    finally:
        command.proc.send_signal(signal.SIGTERM)
    assert command.wait_exit() == 0, command.output


def run_dev_server_with_reloader(server: WatchedProcess, watcher_says: str, insert_row: Callable[[str], None]) -> None:
    """A development server with its autoreloader, and flash_wal starting
    automatically: the watcher process (``server``) does not start the client, its
    serving child does, and exactly once; Ctrl-C ends both."""
    try:
        server.wait_output(f"not starting automatically: {watcher_says}")
        started = server.wait_output("started automatically in process")
        assert started.split()[-1] != str(server.proc.pid)  # the child
        insert_row("from the dev server")
        server.wait_output("new post: from the dev server")
    finally:
        server.signal_group(signal.SIGINT)  # Ctrl-C in a terminal reaches both processes
    server.wait_exit()
    assert server.output.count("new post: from the dev server") == 1
    assert "not listening" not in server.output
