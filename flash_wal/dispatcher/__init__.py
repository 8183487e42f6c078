"""Fan-out of decoded changes to listeners' callbacks, and what may be acknowledged.

- :mod:`.dispatcher`: :class:`Dispatcher`, the Sink a driver writes to;
- :mod:`.routes`: one route per listener, shaping its events;
- :mod:`.route_index`: which routes of a table a change can reach, by equality conditions;
- :mod:`.workers`: the executor interface, and the threads that run one listener's callbacks;
- :mod:`.acknowledgement`: transactions and the tracker that acknowledges them in order.
"""

from .dispatcher import Dispatcher, ErrorHandler
from .workers import Executor, Task, worker_threads

__all__ = ["Dispatcher", "ErrorHandler", "Executor", "Task", "worker_threads"]
