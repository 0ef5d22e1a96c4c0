# Two commands on a fresh machine:  `make demo` (runs the pipeline on the demo fleet), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test ui dashboard bench clean

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dask,postgres]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed  ## the built-in 200-server demo fleet, whole graph, then a summary
	$(BIN)/capacity demo

test: $(BIN)/.installed  ## the whole test suite (a test file per core; the servers it needs are started by its fixtures)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: $(BIN)/.installed
	$(BIN)/capacity ui

dashboard: $(BIN)/.installed
	$(BIN)/capacity dashboard

clean:
	rm -rf $(VENV) data .dagster *.egg-info
