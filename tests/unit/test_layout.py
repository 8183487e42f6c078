"""The package's shape holds: no import cycle, no private name imported from another
package, no module past about 450 lines without saying why in its docstring."""

import ast
import pathlib
from typing import Dict, List, Set

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "flash_wal"
MAX_LINES = 460  # "about 450"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Dict[str, pathlib.Path] = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]


def imported(name: str, node: ast.ImportFrom) -> List[str]:
    """The modules of flash_wal that ``node``, in module ``name``, imports."""
    if node.level:
        parts = package_of(name).split(".")
        base = ".".join(parts[: len(parts) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
    if len(submodules) == len(node.names):
        return submodules  # "from . import x" needs x, not what the package's __init__ imports
    return [target, *submodules] if target in MODULES else submodules


def module_level_imports(name: str) -> List[ast.ImportFrom]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    return [node for node in tree.body if isinstance(node, ast.ImportFrom)]


def test_no_import_cycle():
    graph = {name: {dep for node in module_level_imports(name) for dep in imported(name, node) if dep != name}
             for name in MODULES}
    cycles: List[List[str]] = []

    def visit(name: str, path: List[str], done: Set[str]) -> None:
        for dep in sorted(graph[name]):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep], done)
        done.add(name)

    done: Set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert cycles == []


def test_no_private_name_is_imported_from_another_package():
    found = []
    for name in MODULES:
        for node in module_level_imports(name):
            for target in imported(name, node) or [node.module or ""]:
                if target.startswith("flash_wal") and package_of(target) != package_of(name):
                    found += [f"{name}: {alias.name} from {target}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert found == []


def test_modules_stay_short_or_say_why():
    too_long = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").count("\n")
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if lines > MAX_LINES and "lines" not in docstring:
            too_long.append(f"{name}: {lines} lines")
    assert too_long == []
