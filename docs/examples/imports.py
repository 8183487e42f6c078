from flash_wal import (
    Client, ClientConfig,
    Listener, ListenerConfig, Condition,
    Operation,
    Event, InsertEvent, UpdateEvent, DeleteEvent, TruncateEvent, MessageEvent,
    UNCHANGED_TOAST,
    FlashError, ConfigurationError, ProtocolError, ReplicationError,
)
from flash_wal.drivers.wal_logical import Driver, DriverConfig
