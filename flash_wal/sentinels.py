"""Sentinel values shared by the protocol and event layers."""


class UnchangedToast:
    """A TOASTed column value the server did not send because it did not change.

    The class is public for type annotations only; its one instance is
    :data:`UNCHANGED_TOAST`.
    """

    __slots__ = ()
    _instance = None

    def __new__(cls) -> "UnchangedToast":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"


#: Stands for a TOASTed value that the server did not send and flash_wal could not
#: fill from the old row. Compare with ``is``.
UNCHANGED_TOAST = UnchangedToast()
