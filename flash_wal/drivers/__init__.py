"""Drivers: where the changes come from. See :class:`flash_wal.drivers.base.Driver`."""

from .base import Driver

__all__ = ["Driver"]
