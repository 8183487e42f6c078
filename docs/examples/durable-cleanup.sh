# When the audit trail is retired: drop its slot, or the server keeps WAL for it.
flash-wal cleanup --slot posts_audit --yes
