"""asyncio applications: :class:`AsyncClient`, the client with coroutine callbacks and
``events()`` async iterators (the standard library's asyncio only)."""

from .client import AsyncClient

__all__ = ["AsyncClient"]
