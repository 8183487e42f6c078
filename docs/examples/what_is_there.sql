SELECT slot_name, plugin, temporary, active, active_pid, confirmed_flush_lsn
  FROM pg_replication_slots;
SELECT pubname, obj_description(oid, 'pg_publication') AS made_by FROM pg_publication;
SELECT * FROM pg_publication_tables WHERE pubname = 'flash_publication-flash_replication';
