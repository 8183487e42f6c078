# Price changes of posts not deleted: old and new values, numeric kept exact.
flash-wal listen --table posts --ops update --fields id,price --where-null deleted_at \
    --max-events 1 | jq -r '"post \(.new.id): \(.old.price) -> \(.new.price)"'
