"""Flask integration: ``pip install "flash-wal[flask]"``.

``flash = FlashWal(app)`` or ``flash = FlashWal()`` and later ``flash.init_app(app)``;
listeners with ``@flash.on(table, operations)``; settings in ``app.config`` as
``FLASH_WAL_<NAME>``; ``flask flash-wal run`` runs the client in the foreground. See
the Flask page of the documentation.
"""

from typing import Optional

import click
from flask import Flask, current_app
from flask.cli import AppGroup, run_command
from flask.helpers import get_debug_flag
from werkzeug.serving import is_running_from_reloader

from ..errors import ConfigurationError, FlashError
from ..foreground import run_until_stopped, stderr_logging
from .autostart import autostart
from .registry import ListenerRegistry
from .settings import Settings, read_settings

__all__ = ["FlashWal", "CONFIG_PREFIX"]

#: app.config keys of flash_wal start with this: ``FLASH_WAL_DATABASE_CNX``, ...
CONFIG_PREFIX = "FLASH_WAL_"

NO_LISTENERS = "declare them with @flash.on(...) on the FlashWal object of this app"


class FlashWal(ListenerRegistry):
    """The Flask extension: the app's listeners, its settings and ``flask flash-wal run``.

    ``flash.client`` is the client running in this process, if any.
    """

    def __init__(self, app: Optional[Flask] = None) -> None:
        super().__init__()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check the app's settings, add the ``flash-wal`` commands, and with
        ``FLASH_WAL_AUTOSTART`` start the client if this process serves the app."""
        settings = self.settings(app)
        app.extensions["flash_wal"] = self
        app.cli.add_command(flash_wal_commands)
        if settings.autostart:
            autostart(self, lambda: self.make_client(settings.client), skip_because=why_not_autostart())

    def settings(self, app: Flask) -> Settings:
        """The app's ``FLASH_WAL_*`` settings, checked."""
        values = {key[len(CONFIG_PREFIX):]: value for key, value in app.config.items() if key.startswith(CONFIG_PREFIX)}
        return read_settings(values, spell=lambda name: CONFIG_PREFIX + name, database_cnx=_no_database_cnx)


def _no_database_cnx() -> str:
    raise ConfigurationError(
        "FLASH_WAL_DATABASE_CNX is not set: set app.config['FLASH_WAL_DATABASE_CNX'] to a "
        "connection string such as 'postgresql://user:password@localhost:5432/dbname'"
    )


def why_not_autostart() -> Optional[str]:
    """Why this process must not start the client by itself, or None if it may.

    A process that no click command runs (a WSGI server importing the app) may; of
    the ``flask`` commands only ``flask run``, and with the reloader only in the
    process that serves (Werkzeug marks it with ``WERKZEUG_RUN_MAIN=true``).
    """
    context = click.get_current_context(silent=True)
    if context is None:
        return None
    if context.parent is None:  # the app is loaded to look up a command of app.cli
        return "a flask command other than 'flask run' runs in this process"
    if context.command is not run_command:
        return f"'flask {context.info_name}' is a command, not a web server"
    reload = context.params.get("reload")
    if reload is None:
        reload = get_debug_flag()
    if reload and not is_running_from_reloader():
        return "this is the reloader of 'flask run'; the process it starts serves and listens"
    return None


@click.group("flash-wal", cls=AppGroup)
def flash_wal_commands() -> None:
    """flash_wal: stream PostgreSQL row changes to this app's listeners."""


@flash_wal_commands.command("run")
@click.option("-v", "--verbose", count=True, help="log what flash_wal does (INFO) on stderr; twice for DEBUG")
def run(verbose: int) -> None:
    """Run the client in the foreground until SIGTERM or Ctrl-C, then close it cleanly."""
    flash: FlashWal = current_app.extensions["flash_wal"]
    # Without -v the app's own logging configuration applies.
    with stderr_logging(verbose or None):
        try:
            client = flash.make_client(flash.settings(current_app).client, no_listeners_hint=NO_LISTENERS)
            with flash.running(client):
                run_until_stopped(client, announce=click.echo)
        except FlashError as exc:
            raise click.ClickException(str(exc)) from exc
