import os

from flask import Flask

from flash_wal.contrib.flask import FlashWal

flash = FlashWal()


@flash.on("posts", "insert")
def post_created(event):
    print(f"new post: {event.new['title']}", flush=True)


def create_app():
    app = Flask(__name__)
    app.config["FLASH_WAL_DATABASE_CNX"] = os.environ["DATABASE_URL"]
    app.config.from_prefixed_env()  # FLASK_FLASH_WAL_AUTOSTART=true sets FLASH_WAL_AUTOSTART
    flash.init_app(app)

    @app.get("/")
    def home():
        return "ok"

    return app
