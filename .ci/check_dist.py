"""Check the sdist and wheel that ``python -m build`` left in a folder (``make dist-check``).

What a user gets from ``pip install flash-wal`` is the wheel, not this tree, so this
installs it, with its ``[embedded]`` extra, into a new virtual environment outside the
tree and runs ``flash-wal demo`` from there. That venv uses the oldest Python that
setup.cfg claims when this machine has one (``python3.9`` on PATH, or pyenv's), so a
module that imports only on a newer one fails here; else the Python running this.
``DIST_PYTHON=/path/to/python`` picks one.

Usage: python .ci/check_dist.py DIST_DIR
"""

import configparser
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import List, NoReturn, Optional, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "flash_wal"
DEMO_SECONDS = "4"
DEMO_TIMEOUT = 120.0
#: Besides the package, what the sdist must hold to run the tests and build the docs.
SDIST_EXTRAS = {"README.rst", "CONTRIBUTING.rst", "setup.cfg", "setup.py", "pyproject.toml",
                "MANIFEST.in", "Makefile", "tests/conftest.py", "docs/conf.py", "docs/index.rst"}
#: The demo's last lines (see flash_wal's demo): every kind of change came, and it cleaned up.
DEMO_SUMMARY = re.compile(
    r"^Stopped after [\d.]+ s \(--duration \d+\)\. \d+ events? received "
    r"\(INSERT [1-9]\d*, UPDATE [1-9]\d*, DELETE [1-9]\d*, TRUNCATE [1-9]\d*\)\.$", re.M
)
#: Imports every module of the installed package. The [embedded] extra brings no web
#: framework, so a module of flash_wal.contrib may stop at a missing one.
IMPORT_ALL = r"""
import importlib, pathlib, pkgutil, sys
import flash_wal
location = pathlib.Path(flash_wal.__file__).resolve().parent
assert pathlib.Path(sys.prefix).resolve() in location.parents, f"imported from {location}"
assert (location / "py.typed").is_file(), "py.typed is not installed"
names = [flash_wal.__name__] + [m.name for m in pkgutil.walk_packages(flash_wal.__path__, "flash_wal.")]
skipped = []
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if not name.startswith("flash_wal.contrib.") or (exc.name or "flash_wal").startswith("flash_wal"):
            raise
        skipped.append(name)
print(f"imported {len(names) - len(skipped)} modules from {location}"
      f" ({len(skipped)} of flash_wal.contrib need a web framework)")
"""


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    dist = Path(argv[1])
    wheel, sdist = only(dist, "*.whl"), only(dist, "*.tar.gz")
    check_contents(wheel, sdist)
    python = interpreter(minimum_python())
    with tempfile.TemporaryDirectory(prefix="flash_wal-dist-check-") as scratch:
        check_installed(wheel, python, Path(scratch))
    print(f"dist-check: {wheel.name} and {sdist.name} are complete; "
          "the wheel installs and its demo runs")
    return 0


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        fail(f"expected one {pattern} in {folder}, found {[p.name for p in found]}")
    return found[0]


def package_files() -> Set[str]:
    """The package as this tree has it: what the wheel must hold, no more, no less
    (a module removed from the tree must not survive in a stale build folder)."""
    files = {str(path.relative_to(ROOT)) for path in (ROOT / PACKAGE).rglob("*.py")}
    return files | {f"{PACKAGE}/py.typed"}


def check_contents(wheel: Path, sdist: Path) -> None:
    expected = package_files()
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name for name in archive.namelist() if name.startswith(f"{PACKAGE}/")}
    if in_wheel != expected:
        fail(f"{wheel.name}: missing {sorted(expected - in_wheel)}, unexpected {sorted(in_wheel - expected)}")
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        in_sdist = {name[len(top) + 1:] for name in archive.getnames() if name.startswith(f"{top}/")}
    missing = (expected | SDIST_EXTRAS) - in_sdist
    if missing:
        fail(f"{sdist.name}: missing {sorted(missing)}")
    print(f"dist-check: the wheel holds the {len(expected)} files of {PACKAGE}/, "
          f"the sdist those and the tests and docs ({len(in_sdist)} entries)")


def minimum_python() -> str:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    claim = config.get("options", "python_requires", fallback="")
    match = re.fullmatch(r"\s*>=\s*(\d+\.\d+)\s*", claim)
    if not match:
        fail(f"setup.cfg: python_requires should read '>=X.Y', not {claim!r}")
    return match.group(1)


def interpreter(version: str) -> str:
    """DIST_PYTHON, else a Python ``version`` found here, else the one running this."""
    chosen = os.environ.get("DIST_PYTHON")
    candidates: List[Optional[str]] = [chosen] if chosen else []
    if not chosen:
        # A pyenv shim on PATH may name a version that pyenv does not select: try each.
        candidates.append(shutil.which(f"python{version}"))
        pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", "python")))
    for candidate in filter(None, candidates):
        try:
            found = subprocess.run([candidate, "-c", "import platform; print(platform.python_version())"],
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True)
            problem = found.stderr.strip() if found.returncode else ""
        except OSError as exc:
            problem = str(exc)
        if not problem:
            print(f"dist-check: a new venv with Python {found.stdout.strip()} ({candidate})")
            return candidate
        if chosen:
            fail(f"DIST_PYTHON={chosen} does not run: {problem}")
    print(f"dist-check: no Python {version} (setup.cfg's minimum) here; a new venv with {sys.executable}")
    return sys.executable


def check_installed(wheel: Path, python: str, scratch: Path) -> None:
    venv = scratch / "venv"
    run([python, "-m", "venv", str(venv)])
    bin_dir = venv / "bin"
    run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", f"{wheel.resolve()}[embedded]"],
        capture=True)
    # Run from the scratch folder: the tree's flash_wal/ must not be what gets imported.
    print(run([str(bin_dir / "python"), "-c", IMPORT_ALL], cwd=scratch, capture=True).strip())
    output = demo(bin_dir / "flash-wal", scratch)
    summary = DEMO_SUMMARY.search(output)
    if summary is None or "\nCleaned up:" not in output:
        fail(f"the installed demo did not show every kind of change and clean up:\n{output}")
    print("dist-check: " + summary.group(0))


def demo(command: Path, cwd: Path) -> str:
    """``flash-wal demo --duration N``; a demo that overstays is interrupted as Ctrl-C
    would, and fails the check."""
    proc = subprocess.Popen([str(command), "demo", "--duration", DEMO_SECONDS], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        fail(f"the demo was still running after {DEMO_TIMEOUT:g} s:\n{output}")
    if proc.returncode != 0 or "Traceback" in output:
        fail(f"the installed demo exited with {proc.returncode}:\n{output}")
    return output


def run(command: List[str], *, cwd: Optional[Path] = None, capture: bool = False) -> str:
    result = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, text=True,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.STDOUT if capture else None)
    if result.returncode != 0:
        fail(f"{' '.join(command)} exited with {result.returncode}\n{result.stdout or ''}")
    return result.stdout or ""


def fail(message: str) -> NoReturn:
    print(f"dist-check failed: {message}", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
