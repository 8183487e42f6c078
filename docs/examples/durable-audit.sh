# An audit trail that misses nothing between runs: a durable slot of its own keeps
# the changes committed while the command is not running, for the next run.
flash-wal listen --table posts --durable --slot posts_audit --max-events 3 \
    | jq -c '{op, id: (.new // .old).id}'
