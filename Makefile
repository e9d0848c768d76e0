# Two commands for users: `make book` builds the report, `make test` runs the tests.
# Each creates .venv (if missing) and installs the pinned packages first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= smoke
CHAPTERS ?=
CELL_TIMEOUT ?=
JOBS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed-stamp

.PHONY: install book train test clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[book,test,ray]'
	@touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(PY) -m cifar_utils.book --profile $(PROFILE) $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(if $(CELL_TIMEOUT),--cell-timeout $(CELL_TIMEOUT))

# The GPU path: train every run of the plan first (longest first, resumable), then `make book PROFILE=...`
# renders from the store and trains nothing. JOBS: runs at once.
train: $(STAMP)
	$(PY) -m cifar_utils.train --profile $(PROFILE) $(if $(CHAPTERS),--chapters $(CHAPTERS)) $(if $(JOBS),--jobs $(JOBS))

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf _build
