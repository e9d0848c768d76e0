# Three commands for users: `make book` builds the report, `make lab` explores it in JupyterLab,
# `make test` runs the tests. Each creates .venv (if missing) and installs the pinned packages first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= smoke
CHAPTERS ?=
CELL_TIMEOUT ?=
JOBS ?=
PYTEST_ARGS ?=
PORT ?=
LAB_ARGS ?=
STAMP := $(VENV)/.installed-stamp

.PHONY: install book train lab test clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[book,lab,test,ray]'
	@touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(PY) -m cifar_utils.book --profile $(PROFILE) $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(if $(CELL_TIMEOUT),--cell-timeout $(CELL_TIMEOUT))

# The GPU path: train every run of the plan first (longest first, resumable), then `make book PROFILE=...`
# renders from the store and trains nothing. JOBS: runs at once.
train: $(STAMP)
	$(PY) -m cifar_utils.train --profile $(PROFILE) $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(if $(JOBS),--jobs $(JOBS))

# JupyterLab on the chapters with the parameters and the results store of the last `make book` (same PROFILE)
lab: $(STAMP)
	$(PY) -m cifar_utils.book.lab --profile $(PROFILE) $(if $(PORT),--port $(PORT)) $(LAB_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf _build
