# Every target sets up .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PACKAGE := flash_wal

.PHONY: demo demo-web test test-unit test-faults soak kill-backlog test-matrix docs bench clean \
	typecheck check-python-version dist-check

$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[embedded,nats,test,docs,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flash-wal demo

# The live page (docs/examples/live) on the embedded server; prints its URL.
demo-web: $(STAMP)
	$(PY) docs/examples/live/run.py $(DEMO_WEB_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# No server: the parser, the ack logic, the dispatcher, the translator, in seconds.
test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

# The fault-injection tests, FAULT_RUNS times in a row; any failure stops the run.
FAULT_RUNS ?= 5
test-faults: $(STAMP)
	for run in $$(seq $(FAULT_RUNS)); do \
		echo "fault run $$run of $(FAULT_RUNS)"; \
		$(PY) -m pytest -q tests/faults $(PYTEST_ARGS) || exit 1; \
	done

# Not in CI: SOAK_SECONDS (default 600) of mixed load into a durable consumer process,
# with a fault every 30 s (SIGKILL, walsender terminated, server restarted).
SOAK_SECONDS ?= 600
soak: $(STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) benchmarks/soak.py $(SOAK_ARGS)

# Duplicates per SIGKILL of a durable consumer draining a backlog of 500,000 rows.
kill-backlog: $(STAMP)
	$(PY) benchmarks/kill_backlog.py $(KILL_BACKLOG_ARGS)

# The suite on PostgreSQL 15 (Debian's postgresql-15), 16 (pgserver wheel) and 18.
test-matrix:
	FLASH_WAL_TEST_PG=15 $(MAKE) test
	FLASH_WAL_TEST_PG=16 $(MAKE) test
	FLASH_WAL_TEST_PG=18 $(MAKE) test

# matplotlib draws the bench's chart: a bench-only dependency, not one of the package.
bench: $(STAMP)
	$(PY) -m pip install --quiet matplotlib
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

# Not in CI yet: the package is being made strict-clean.
typecheck: $(STAMP)
	$(PY) -m mypy --strict $(PACKAGE)

# The oldest Python that setup.cfg claims, from its 'python_requires = >=X.Y'.
MIN_PYTHON = $(shell sed -n 's/^python_requires *= *>= *\([0-9][0-9.]*\) *$$/\1/p' setup.cfg)

# vermin finds what that Python lacks by reading the code: it need not be installed.
# --eval-annotations: with no `from __future__ import annotations` a def's annotations
# are evaluated when it runs. Its union-types feature stays off, as it takes flags such
# as `re.I | re.S` for `X | Y` types; dist-check, importing every module on that Python
# where the machine has it, catches an `X | Y` annotation.
check-python-version: $(STAMP)
	@test -n "$(MIN_PYTHON)" || { echo "setup.cfg has no 'python_requires = >=X.Y'" >&2; exit 1; }
	$(VENV)/bin/vermin --target=$(MIN_PYTHON)- --violations --no-tips --eval-annotations $(PACKAGE)

# The sdist and wheel a release would upload, checked by twine, then the wheel installed
# with its [embedded] extra into a new venv (on that oldest Python, when this machine
# has one) where the demo runs for a few seconds: see .ci/check_dist.py.
dist-check: $(STAMP)
	rm -rf build dist
	$(PY) -m build --quiet --outdir dist .
	$(VENV)/bin/twine check --strict dist/*.whl dist/*.tar.gz
	$(PY) .ci/check_dist.py dist

clean:
	rm -rf $(VENV) docs/_build build dist *.egg-info .pytest_cache
