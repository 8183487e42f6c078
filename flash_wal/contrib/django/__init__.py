"""Django integration: ``pip install "flash-wal[django]"``.

Add ``"flash_wal.contrib.django"`` to ``INSTALLED_APPS``, declare listeners in a
``listeners.py`` module of any app with the ``flash`` object below, and run
``python manage.py flash_wal``. Settings go in ``settings.FLASH_WAL``; see the
Django page of the documentation.
"""

from typing import Any, Callable, Optional, Union

from ...operations import Operation
from ..registry import F, ListenerRegistry

__all__ = ["flash", "DjangoListeners"]


class DjangoListeners(ListenerRegistry):
    """The listeners of a Django project, declared in each app's ``listeners.py``."""

    def on(
        self, table: Union[str, Any], operations: Union[Operation, str] = Operation.ALL, **listener_options: Any
    ) -> Callable[[F], F]:
        """Decorator: call the function for ``operations`` on ``table``, a table name
        as in :meth:`flash_wal.Client.on` or a model class (its ``db_table``)."""
        return super().on(_table_name(table), operations, **listener_options)


def _table_name(table: Union[str, Any]) -> str:
    meta: Optional[Any] = getattr(table, "_meta", None)
    if meta is None or not isinstance(getattr(meta, "db_table", None), str):
        return table
    db_table: str = meta.db_table
    if db_table.startswith('"'):
        return db_table  # already quoted by hand, e.g. '"schema"."table"'
    # Django quotes db_table in its SQL, so the name is exact: keep its case.
    return '"' + db_table.replace('"', '""') + '"'


#: Where listeners are declared: ``@flash.on(Post, "insert")`` in ``app/listeners.py``.
#: ``flash.client`` is the client running in this process, if any.
flash = DjangoListeners()
