"""``make demo-web``: the live page on a throwaway PostgreSQL, with the demo's writer.

Starts the embedded server, creates the demo table ``posts``, starts the demo's writer
(a short scenario, then one change a second) and serves the page until Ctrl-C.
"""

import argparse
import os
import signal
import sys

import uvicorn
from psycopg2 import sql

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from app import make_app  # noqa: E402

from flash_wal.cli.demo_output import Printer  # noqa: E402
from flash_wal.cli.demo_writer import TABLE_COLUMNS, Writer  # noqa: E402
from flash_wal.embedded import EmbeddedPostgres  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between the writer's changes")
    args = parser.parse_args()
    # uvicorn raises SIGTERM again once it has shut down: exit through the finally
    # blocks below, so that the embedded server is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with EmbeddedPostgres() as server:
        import psycopg2

        with psycopg2.connect(server.dsn) as conn, conn.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE TABLE IF NOT EXISTS posts (" + TABLE_COLUMNS + ")"))
        conn.close()
        writer = Writer(server.dsn, sql.Identifier("posts"), Printer(open(os.devnull, "w")), args.interval,
                        pause=2.0)
        app = make_app(server.dsn, "posts")
        config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")
        print(f"Live page of table posts: http://127.0.0.1:{args.port}/  (Ctrl-C stops)", flush=True)
        writer.start()
        try:
            uvicorn.Server(config).run()
        finally:
            writer.stop()
            writer.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
