"""Publishing changes to NATS JetStream: :class:`JetStreamSink` (extra ``[nats]``),
and ``flash-wal pipe``. See the documentation's scale-out page."""

try:
    import nats  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    # A ModuleNotFoundError still, as for the other integrations, with what to install.
    raise ModuleNotFoundError("flash_wal.contrib.nats needs nats-py: pip install 'flash-wal[nats]'",
                              name=exc.name) from exc

from .publisher import StreamSettings
from .sink import JetStreamSink
from .subjects import DEFAULT_SUBJECT_PREFIX, message_id, subject_for

__all__ = ["JetStreamSink", "StreamSettings", "DEFAULT_SUBJECT_PREFIX", "message_id", "subject_for"]
