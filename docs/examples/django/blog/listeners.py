from flash_wal.contrib.django import flash

from .models import Post


@flash.on(Post, "insert")
def post_created(event):
    print(f"new post: {event.new['title']}", flush=True)


@flash.on(Post, "update", fields=["id", "published"])
def post_published(event):
    if event.new["published"]:
        print(f"published: {event.new['id']}", flush=True)
