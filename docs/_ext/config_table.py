"""``.. config-table:: flash_wal.ClientConfig``: a table of an attrs config class's fields.

The field names and defaults come from ``attr.fields``, the meanings from the ``#:``
comment above each field in the source, so the reference cannot drift from the code. A
field without such a comment is a build warning (and ``make docs`` treats warnings as
errors). ``metadata={"shown_default": ...}`` on a field overrides how its default is
shown, for factories and for numbers better read in units.
"""

import importlib
from typing import Any, List, Tuple

import attr
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def import_config_class(path: str) -> Any:
    module_name, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def documented_fields(cls: Any) -> "List[Tuple[attr.Attribute[Any], List[str]]]":
    """Each field a user sets (``init``), with the non-blank lines of its ``#:`` comment
    (empty when it has none)."""
    docs = ModuleAnalyzer.for_module(cls.__module__).find_attr_docs()
    return [
        (field, [line for line in docs.get((cls.__name__, field.name), []) if line.strip()])
        for field in attr.fields(cls)
        if field.init
    ]


def _shown_default(field: "attr.Attribute[Any]") -> str:
    if "shown_default" in field.metadata:
        return field.metadata["shown_default"]
    if field.default is attr.NOTHING:
        return "required"
    if isinstance(field.default, attr.Factory):  # type: ignore[arg-type]
        return f"``{field.default.factory()!r}``"  # type: ignore[union-attr]
    return f"``{field.default!r}``"


class ConfigTable(SphinxDirective):
    required_arguments = 1

    def run(self) -> List[nodes.Node]:
        path = self.arguments[0]
        cls = import_config_class(path)
        lines = [
            f".. list-table:: ``{path}``",
            "   :header-rows: 1",
            "   :widths: 22 18 60",
            "",
            "   * - Field",
            "     - Default",
            "     - Meaning",
        ]
        for field, meaning in documented_fields(cls):
            if not meaning:
                logger.warning("%s.%s has no #: comment to document it", path, field.name,
                               location=self.get_location())
                meaning = ["(undocumented)"]
            lines.append(f"   * - ``{field.name}``")
            lines.append(f"     - {_shown_default(field)}")
            lines.append(f"     - {meaning[0]}")
            lines.extend(f"       {line}" for line in meaning[1:])
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=path), self.content_offset, container)
        return container.children


def setup(app: Any) -> dict:
    app.add_directive("config-table", ConfigTable)
    return {"parallel_read_safe": True}
