"""A framework's flash_wal settings, named after the keyword arguments of
:class:`~flash_wal.ClientConfig` and :class:`~flash_wal.drivers.wal_logical.DriverConfig`
in upper case (``{"REPLICATION_SLOT": "blog", "DURABLE": True}``), checked and made
into a ``ClientConfig``; and ``AUTOSTART``, whether web processes start the client."""

import importlib
from typing import Any, Callable, List, Mapping

import attr

from ..client import ClientConfig
from ..drivers.wal_logical import Driver, DriverConfig
from ..errors import ConfigurationError

__all__ = ["Settings", "read_settings", "check_setting_names", "setting_names", "AUTOSTART"]

#: The setting that starts the client inside web processes; not a ClientConfig field.
AUTOSTART = "AUTOSTART"
_CLIENT_FIELDS = tuple(field.name for field in attr.fields(ClientConfig) if field.name != "driver")
_DRIVER_FIELDS = tuple(field.name for field in attr.fields(DriverConfig))
#: Callables that a settings file may give as a dotted path.
_CALLABLE_FIELDS = ("on_error",)


def setting_names() -> List[str]:
    """Every setting the integrations accept."""
    return sorted([name.upper() for name in _CLIENT_FIELDS + _DRIVER_FIELDS] + [AUTOSTART])


@attr.s(frozen=True, slots=True, kw_only=True)
class Settings:
    """A framework's flash_wal settings, read and checked."""

    client: ClientConfig = attr.ib()
    autostart: bool = attr.ib()


def read_settings(
    values: Mapping[str, Any], *, spell: Callable[[str], str], database_cnx: Callable[[], str]
) -> Settings:
    """Check and convert settings such as ``{"REPLICATION_SLOT": "blog", "DURABLE": True}``.

    ``spell`` writes a setting's name as the user wrote it, for messages (Django:
    ``FLASH_WAL['DURABLE']``, Flask: ``FLASH_WAL_DURABLE``); ``database_cnx`` gives the
    connection string when ``DATABASE_CNX`` is not set (it may raise ConfigurationError).
    """
    check_setting_names(values, spell)
    options = {name.lower(): value for name, value in values.items() if name != AUTOSTART}
    for name in _CALLABLE_FIELDS:
        if isinstance(options.get(name), str):
            options[name] = _import_callable(options[name], spell(name.upper()))
    autostart = values.get(AUTOSTART, False)
    if not isinstance(autostart, bool):
        raise ConfigurationError(f"{spell(AUTOSTART)} must be True or False, got {autostart!r}")
    if options.get("database_cnx") is None:
        options["database_cnx"] = database_cnx()
    try:
        driver = Driver(DriverConfig(**{name: options.pop(name) for name in _DRIVER_FIELDS if name in options}))
        client = ClientConfig(driver=driver, **options)
    except ConfigurationError as exc:
        raise ConfigurationError(_in_settings_terms(str(exc), spell)) from None
    return Settings(client=client, autostart=autostart)


def _in_settings_terms(message: str, spell: Callable[[str], str]) -> str:
    """"replication_slot must be ..." becomes "FLASH_WAL['REPLICATION_SLOT'] must be ..."."""
    for name in _CLIENT_FIELDS + _DRIVER_FIELDS:
        if message.startswith(name + " "):
            return spell(name.upper()) + message[len(name):]
    return f"flash_wal settings: {message}"


def check_setting_names(values: Mapping[str, Any], spell: Callable[[str], str]) -> None:
    """Raise ConfigurationError naming the valid settings if one is unknown."""
    valid = setting_names()
    unknown = sorted(str(name) for name in values if name not in valid)
    if unknown:
        raise ConfigurationError(
            f"unknown flash_wal setting{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(spell(name) for name in unknown)}; the settings are "
            f"{', '.join(valid)} (ClientConfig's and DriverConfig's arguments in upper case)"
        )


def _import_callable(path: str, setting: str) -> Callable[..., Any]:
    module_name, _, name = path.rpartition(".")
    try:
        value: object = getattr(importlib.import_module(module_name), name) if module_name else None
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{setting}: cannot import {path!r} ({exc})") from exc
    if not callable(value):
        raise ConfigurationError(f"{setting} must be a callable or the dotted path of one, got {path!r}")
    return value
