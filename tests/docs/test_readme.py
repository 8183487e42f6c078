"""The README's quickstart runs as written, against the test server."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.rst")
DSN_LINE = re.compile(r'^DSN = "[^"\n]*"$', re.M)

# The quickstart's default names (it uses Driver()).
SLOT = "flash_replication"
PUBLICATION_PREFIX = "flash_publication"


def quickstart_code() -> str:
    """The first ``.. code-block:: python`` after the ``Quickstart`` heading."""
    with open(README, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    heading = lines.index("Quickstart")
    start = next(
        i for i in range(heading + 1, len(lines)) if lines[i].strip() == ".. code-block:: python"
    )
    body = []
    for line in lines[start + 1:]:
        if line.strip() and not line[:1].isspace():
            break  # back at the left margin: the block is over
        body.append(line)
    # Drop the directive's options (":linenos:" ...) and the blank line before the code.
    while body and (not body[0].strip() or body[0].strip().startswith(":")):
        body.pop(0)
    code = textwrap.dedent("\n".join(body)).strip() + "\n"
    assert code.strip(), "the Quickstart code block is empty"
    return code


def test_quickstart_code_is_found_and_has_one_dsn_line():
    code = quickstart_code()
    assert len(DSN_LINE.findall(code)) == 1
    compile(code, "README.rst quickstart", "exec")


def test_quickstart_runs_as_written(dsn, db, tmp_path):
    if db.fetchone("SELECT to_regclass('public.posts')")[0] is not None:
        pytest.skip("public.posts already exists on the test server; the quickstart writes to it")
    code, replaced = DSN_LINE.subn(lambda _match: f"DSN = {dsn!r}", quickstart_code())
    assert replaced == 1
    script = tmp_path / "quickstart.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    try:
        result = subprocess.run(
            [sys.executable, str(script)], cwd=str(tmp_path), env=env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
    finally:
        db.execute("DROP TABLE IF EXISTS public.posts")
    report = f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    assert result.stdout.splitlines() == [
        "INSERT {'title': 'Hello', 'published': False}",
        "INSERT {'title': 'World', 'published': False}",
        "UPDATE {'title': 'Hello', 'published': True}",
    ], report
    # close() removed what start() created.
    assert db.slots(SLOT) == []
    assert db.publications(PUBLICATION_PREFIX) == []
