# The title of each post as it is published: a post inserted as published, or an
# update that makes a draft match --where (it comes out as an INSERT).
flash-wal listen --table posts --ops insert --where status=published --max-events 2 \
    | jq -r .new.title
