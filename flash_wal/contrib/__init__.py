"""Integrations with web frameworks: :mod:`flash_wal.contrib.django` and :mod:`flash_wal.contrib.flask`."""
