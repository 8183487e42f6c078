"""PostgreSQL's ``pgoutput`` logical replication protocol, sans I/O.

- :mod:`.messages`: the message classes (data only).
- :mod:`.fields`: how fields are laid out in bytes (integers, strings, timestamps,
  TupleData), and the error the readers raise.
- :mod:`.readers`: one reader per message type.
- :mod:`.parser`: :data:`MESSAGE_TYPES`, the one table of type bytes, and
  :class:`PgOutputParser`, which reads a session's payloads through it.
"""

from . import messages, parser
from .messages import *
from .parser import *

# The package exports exactly what its modules for users of the parser export.
__all__ = messages.__all__ + parser.__all__
