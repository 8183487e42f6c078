SELECT slot_name, plugin, temporary, active, active_pid, confirmed_flush_lsn
  FROM pg_replication_slots;
SELECT pubname FROM pg_publication;
SELECT * FROM pg_publication_tables WHERE pubname = 'flash_publication_flash_replication';
