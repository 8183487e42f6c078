ALTER SYSTEM SET wal_level = logical;   -- then restart PostgreSQL
