"""A live page of a table's rows: Starlette, uvicorn, and flash_wal.aio.

One HTML page (``page.html``) and a Server-Sent Events endpoint, ``/events``: for each
browser, the table's rows first (``initial_rows``), then every change as it commits,
from ``AsyncClient.events()``. The page adds a row on INSERT, changes its cells on
UPDATE and removes it on DELETE.

    pip install 'flash-wal[web]'
    FLASH_WAL_DSN=postgresql://... uvicorn --factory app:app_from_environment

``make demo-web`` runs it on the demo's embedded server, with the demo's writer.
"""

import asyncio
import json
import os
import pathlib
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List

import psycopg2
from psycopg2 import sql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, StreamingResponse
from starlette.routing import Route

from flash_wal import Operation
from flash_wal.aio import AsyncClient
from flash_wal.event_json import event_as_dict, json_value

PAGE = pathlib.Path(__file__).with_name("page.html").read_text()


def initial_rows(dsn: str, table: str) -> List[Dict[str, Any]]:
    """THE ROWS A BROWSER STARTS FROM. A plain SELECT, made after the browser's
    subscription began, so no change is missed: a change that the SELECT already saw
    arrives as an event too, and the page applies it again to the same result.
    (With backfill, this becomes ``client.events(table, Operation.READ | Operation.ALL,
    backfill=True)``: the rows then arrive as ReadEvents in the one stream.)"""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(table)))
        columns = [column.name for column in cursor.description]
        rows = [{name: json_value(value) for name, value in zip(columns, row)} for row in cursor.fetchall()]
    conn.close()
    return rows


def sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def make_app(dsn: str, table: str = "posts", **client_options: Any) -> Starlette:
    """The application; its lifespan starts the one AsyncClient of the process and closes it."""
    client = AsyncClient(database_cnx=dsn, **client_options)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with client:
            yield

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("{{table}}", table))

    async def events(request: Request) -> StreamingResponse:
        changes = client.events(table, Operation.ALL)  # subscribed from here on

        async def stream() -> AsyncIterator[str]:
            rows = await run_blocking(initial_rows, dsn, table)
            yield sse("rows", rows)
            async for event in changes:  # ends when the browser goes (Starlette cancels us)
                yield sse("change", event_as_dict(event))

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    app = Starlette(routes=[Route("/", page), Route("/events", events)], lifespan=lifespan)
    app.state.client = client
    return app


async def run_blocking(function: Any, *args: Any) -> Any:
    """A blocking call (the SELECT) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def app_from_environment() -> Starlette:
    return make_app(os.environ["FLASH_WAL_DSN"], os.environ.get("FLASH_WAL_TABLE", "posts"))
