"""``python manage.py flash_wal``: the client in the foreground until SIGTERM or Ctrl-C."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flash_wal.cli import _setup_logging
from flash_wal.contrib._runner import run_until_stopped
from flash_wal.contrib.django import flash
from flash_wal.contrib.django.conf import client_settings
from flash_wal.errors import FlashError

NO_LISTENERS = (
    "declare them with @flash.on(...) in a listeners.py module of an app in INSTALLED_APPS "
    "(from flash_wal.contrib.django import flash)"
)


class Command(BaseCommand):
    help = (
        "Run flash_wal in the foreground with the listeners of every app's listeners.py, "
        "until SIGTERM or Ctrl-C; then close it cleanly. Settings: settings.FLASH_WAL."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        # -v 2 shows flash_wal's INFO messages, -v 3 its DEBUG ones, on stderr.
        undo_logging = _setup_logging(verbosity - 1) if verbosity > 1 else None
        try:
            client = flash.make_client(client_settings().client, no_listeners_hint=NO_LISTENERS)
            run_until_stopped(flash, client, self._announce if verbosity > 0 else _silent)
        except FlashError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if undo_logging is not None:
                undo_logging()

    def _announce(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()


def _silent(message: str) -> None:
    pass
