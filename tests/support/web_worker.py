"""A web worker for the Django and Flask tests: what gunicorn does, in miniature.

    python -m tests.support.web_worker MODULE:ATTRIBUTE
    python -m tests.support.web_worker MODULE:FACTORY()

imports the WSGI application (or calls the factory, as gunicorn does), serves it with wsgiref on a free port of 127.0.0.1 and prints
``serving <port>``. SIGTERM ends it with a normal interpreter exit, atexit handlers
included, as gunicorn's graceful shutdown does.
"""

import importlib
import signal
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main() -> None:
    module_name, _, attribute = sys.argv[1].partition(":")
    application = getattr(importlib.import_module(module_name), attribute.rstrip("()"))
    if attribute.endswith("()"):
        application = application()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with make_server("127.0.0.1", 0, application, handler_class=QuietHandler) as server:
        print(f"serving {server.server_port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
