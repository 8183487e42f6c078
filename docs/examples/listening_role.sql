CREATE ROLE app_listener LOGIN REPLICATION PASSWORD 'change me';
ALTER TABLE posts OWNER TO app_listener;
GRANT CREATE ON DATABASE appdb TO app_listener;
