"""``settings.FLASH_WAL`` to a ClientConfig; the connection defaults to ``DATABASES['default']``."""

from typing import Any, Dict, Mapping

import psycopg2
from psycopg2.extensions import make_dsn

from ...errors import ConfigurationError
from ..settings import AUTOSTART, Settings, check_setting_names, read_settings

__all__ = ["client_settings", "database_cnx_from", "autostart_wanted"]

#: OPTIONS of Django's PostgreSQL backend that are Django's, not libpq's.
DJANGO_ONLY_OPTIONS = frozenset(
    ("assume_role", "isolation_level", "pool", "server_side_binding", "cursor_factory", "context", "prepare_threshold")
)


def _spell(name: str) -> str:
    return f"FLASH_WAL[{name!r}]"


def _values() -> Mapping[str, Any]:
    from django.conf import settings

    values = getattr(settings, "FLASH_WAL", {})
    if not isinstance(values, Mapping):
        raise ConfigurationError(f"settings.FLASH_WAL must be a dict such as {{'AUTOSTART': True}}, got {values!r}")
    check_setting_names(values, _spell)
    return values


def autostart_wanted() -> bool:
    """Whether ``FLASH_WAL['AUTOSTART']`` is on; checks the setting names in passing."""
    return bool(_values().get(AUTOSTART))


def client_settings() -> Settings:
    """``settings.FLASH_WAL``, checked; ``DATABASE_CNX`` defaults to the default database."""
    return read_settings(_values(), spell=_spell, database_cnx=_default_database_cnx)


def _default_database_cnx() -> str:
    from django.db import connections

    if "default" not in connections.settings:
        raise ConfigurationError("settings.DATABASES has no 'default' database: set FLASH_WAL['DATABASE_CNX']")
    database = connections["default"]
    if database.vendor != "postgresql":
        raise ConfigurationError(
            f"DATABASES['default'] is not PostgreSQL (ENGINE {database.settings_dict.get('ENGINE')!r}): "
            "set FLASH_WAL['DATABASE_CNX'] to the PostgreSQL server to listen to"
        )
    return database_cnx_from(database.settings_dict)


def database_cnx_from(database: Mapping[str, Any]) -> str:
    """A libpq connection string for one entry of ``settings.DATABASES``, as Django's
    PostgreSQL backend connects: NAME, USER, PASSWORD, HOST, PORT and OPTIONS."""
    name = database.get("NAME")
    options = dict(database.get("OPTIONS") or {})
    params: Dict[str, Any] = {key: value for key, value in options.items() if key not in DJANGO_ONLY_OPTIONS}
    if name is None:
        params.pop("service", None)
        params["dbname"] = "postgres"  # what Django does for NAME None
    elif name:
        params["dbname"] = name
    for setting, keyword in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"), ("PORT", "port")):
        if database.get(setting):
            params[keyword] = database[setting]
    try:
        dsn: str = make_dsn(**params)
        return dsn
    except psycopg2.ProgrammingError as exc:
        raise ConfigurationError(
            f"cannot make a connection string of DATABASES['default'] ({exc}); "
            "set FLASH_WAL['DATABASE_CNX']"
        ) from exc
