-- The event trigger for partitions created later, and its function.
DROP EVENT TRIGGER IF EXISTS flash_wal_partition_identity;
DROP FUNCTION IF EXISTS public.flash_wal_partition_identity();
-- A table: its primary key identifies its rows again.
ALTER TABLE posts REPLICA IDENTITY DEFAULT;
-- A partitioned table and every partition of it, at every level.
DO $$
DECLARE
  relation regclass;
BEGIN
  FOR relation IN SELECT relid FROM pg_partition_tree('measurements') LOOP
    EXECUTE format('ALTER TABLE %s REPLICA IDENTITY DEFAULT', relation);
  END LOOP;
END
$$;
