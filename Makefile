# Every target sets up .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs bench clean

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[embedded,test,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flash-wal demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build build *.egg-info .pytest_cache
