"""The live page (docs/examples/live) in a real browser: Debian's Chromium, headless,
driven by Playwright, shows the table's rows and follows inserts, updates and deletes
made in the database. The screenshot is kept (build/artifacts/live-page.png)."""

import os
import shutil
import socket
import sys
import threading
from typing import Any, Iterator

import pytest
from psycopg2 import sql

from flash_wal.cli.demo_writer import TABLE_COLUMNS
from flash_wal.drivers.wal_logical import Driver, DriverConfig

from tests.support.database import Database
from tests.support.processes import ROOT
from tests.support.waiting import wait_for

LIVE = os.path.join(ROOT, "docs", "examples", "live")
ARTIFACTS = os.path.join(ROOT, "build", "artifacts")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

uvicorn = pytest.importorskip("uvicorn", reason="the live page needs uvicorn: pip install 'flash-wal[web]'")
pytest.importorskip("starlette", reason="the live page needs starlette: pip install 'flash-wal[web]'")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs Playwright for Python (pip install playwright)")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip("no Chromium to drive: apt-get install chromium (Debian)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def live_page(dsn: str, db: Database, unique: str) -> Iterator[Any]:
    """The page's app on its own port, for a demo table of this test's; yields (url, table)."""
    table = f"live_{unique}"
    db.execute(sql.SQL("CREATE TABLE {} (" + TABLE_COLUMNS + ")").format(sql.Identifier(table)))
    db.execute(sql.SQL("INSERT INTO {} (title, status, views) VALUES ('There first', 'draft', 1)").format(
        sql.Identifier(table)))
    sys.path.insert(0, LIVE)
    try:
        from app import make_app
    finally:
        sys.path.remove(LIVE)
    slot = f"flash_{unique}"
    app = make_app(dsn, table, driver=Driver(DriverConfig(publication_slot_prefix=f"pub_{slot}",
                                                          replication_slot=slot)), shutdown_timeout=5.0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="live-page", daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the live page's server")
    try:
        yield f"http://127.0.0.1:{port}/", table
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the live page's server did not stop"
        assert db.slots(slot) == [], "slot left behind"
        db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def test_the_page_follows_inserts_updates_and_deletes(live_page, db):
    url, table = live_page
    t = sql.Identifier(table)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 420})
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            row = 'tr[data-id="{}"] td[data-column="{}"]'
            assert page.text_content(row.format(1, "title")) == "There first"

            db.execute(sql.SQL("INSERT INTO {} (title, status, price, tags) VALUES "
                               "('Hello, live page', 'draft', 9.99, ARRAY['live', 'python'])").format(t))
            page.wait_for_selector(row.format(2, "title") + ":text-is('Hello, live page')", timeout=30_000)
            assert page.text_content(row.format(2, "price")) == "9.99"

            db.execute(sql.SQL("UPDATE {} SET status = 'published', views = 42 WHERE id = 2").format(t))
            page.wait_for_selector(row.format(2, "status") + ":text-is('published')", timeout=30_000)
            assert page.text_content(row.format(2, "views")) == "42"

            db.execute(sql.SQL("DELETE FROM {} WHERE id = 1").format(t))
            page.wait_for_selector('tr[data-id="1"]', state="detached", timeout=30_000)
            db.execute(sql.SQL("INSERT INTO {} (title, status, tags) VALUES "
                               "('And one more', 'draft', ARRAY['wal'])").format(t))
            page.wait_for_selector(row.format(3, "title") + ":text-is('And one more')", timeout=30_000)
            assert page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.id)") == ["2", "3"]

            os.makedirs(ARTIFACTS, exist_ok=True)
            page.eval_on_selector_all(".fresh", "rows => rows.forEach(r => r.classList.remove('fresh'))")
            page.screenshot(path=os.path.join(ARTIFACTS, "live-page.png"))
        finally:
            browser.close()
