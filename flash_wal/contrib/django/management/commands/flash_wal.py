"""``python manage.py flash_wal``: the client in the foreground until SIGTERM or Ctrl-C."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flash_wal.contrib.django import flash
from flash_wal.contrib.django.conf import client_settings
from flash_wal.errors import FlashError
from flash_wal.foreground import run_until_stopped, stderr_logging

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
        # -v 2 shows flash_wal's INFO messages, -v 3 its DEBUG ones, on stderr; below
        # that the project's LOGGING applies.
        with stderr_logging(verbosity - 1 if verbosity > 1 else None):
            try:
                client = flash.make_client(client_settings().client, no_listeners_hint=NO_LISTENERS)
                with flash.running(client):
                    run_until_stopped(client, announce=self._announce if verbosity > 0 else None)
            except FlashError as exc:
                raise CommandError(str(exc)) from exc

    def _announce(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()
