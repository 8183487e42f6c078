"""The Django app: finds every app's ``listeners.py`` and, with ``AUTOSTART``, starts
the client in web processes."""

import os
import sys
from typing import Optional

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from ..autostart import autostart
from . import flash
from .conf import autostart_wanted, client_settings


class FlashWalConfig(AppConfig):
    name = "flash_wal.contrib.django"
    label = "flash_wal"
    verbose_name = "flash_wal"
    default = True

    def ready(self) -> None:
        autodiscover_modules("listeners")
        if autostart_wanted():
            config = client_settings().client
            autostart(flash, lambda: flash.make_client(config), skip_because=why_not_autostart())


def why_not_autostart() -> Optional[str]:
    """Why this process must not start the client by itself, or None if it may.

    Web servers (gunicorn, uWSGI, Daphne, uvicorn...) may; of the management commands
    only ``runserver`` may, and only in the process that serves: with the autoreloader,
    its child (which Django marks with ``RUN_MAIN=true``), not the watcher.
    """
    from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

    command = management_command()
    if command is None:
        return None
    if command != "runserver":
        return f"'{command}' is a management command, not a web server"
    if "--noreload" not in sys.argv and os.environ.get(DJANGO_AUTORELOAD_ENV) != "true":
        return "this is runserver's autoreloader; the process it starts serves and listens"
    return None


def management_command() -> Optional[str]:
    """The command of ``manage.py``, ``django-admin`` or ``python -m django``, or None."""
    if not sys.argv:
        return None
    program = sys.argv[0]
    if os.path.basename(program) in ("manage.py", "django-admin", "django-admin.py") or program.endswith(
        os.path.join("django", "__main__.py")
    ):
        return sys.argv[1] if len(sys.argv) > 1 else "help"
    return None
