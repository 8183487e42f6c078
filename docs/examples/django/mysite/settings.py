# The settings of a minimal project; yours has more.
SECRET_KEY = "an example, not a secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "mysite.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "mysite",
        "USER": "mysite",
        "PASSWORD": "secret",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }
}

# [installed-apps]
INSTALLED_APPS = [
    "blog",
    "flash_wal.contrib.django",
]
# [installed-apps]

# [flash-wal-settings]
# Optional: every key has a default, and the connection is DATABASES["default"].
FLASH_WAL = {
    "REPLICATION_SLOT": "mysite",
    "PUBLICATION_SLOT_PREFIX": "mysite",
}
# [flash-wal-settings]
