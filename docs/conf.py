"""Sphinx configuration for flash_wal's documentation (``make docs``)."""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import flash_wal  # noqa: E402  (after the path is set)

project = "flash_wal"
author = "flash_wal contributors"
copyright = "flash_wal contributors"
release = flash_wal.__version__
version = ".".join(release.split(".")[:2])

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

extensions = [
    "config_table",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the Args:/Raises: sections of some docstrings
    "sphinx.ext.viewcode",
]

# No network access while building: no intersphinx, and unresolved references to
# other projects (psycopg2, attrs...) are not warnings.
nitpicky = False

exclude_patterns = ["_build"]
templates_path = []
html_static_path = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Members and base classes are listed explicitly in api.rst.
autodoc_default_options = {}
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"flash_wal {release}"
html_theme_options = {
    "description": "React to every row change in PostgreSQL, from Python.",
    "fixed_sidebar": True,
}
