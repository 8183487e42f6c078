"""The ``wal_logical`` driver: logical replication with the built-in pgoutput plugin."""

from .driver import Driver, DriverConfig

__all__ = ["Driver", "DriverConfig"]
