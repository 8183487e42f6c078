import logging

# flash_wal never configures logging: the application does. At INFO a client says
# when it starts streaming, when it reconnects and when it closes; nothing per change.
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("flash_wal").setLevel(logging.INFO)
