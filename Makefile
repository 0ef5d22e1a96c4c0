# Two commands on a fresh machine:  `make demo` (runs the pipeline on the demo fleet), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

# the Prophet fast path (forecasting/engines/prophet.py) was checked against these: `make lock` keeps
# them; move them only after re-checking it (capacity_assets_tests/forecasting, benchmarks/README.md)
CHECKED_PINS := prophet==1.5.0 cmdstanpy==1.3.2

.PHONY: install lock demo test ui dashboard bench clean

# the versions in constraints.txt, so every install computes the same forecasts
$(BIN)/.installed: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,dask,postgres]'
	touch $@

install: $(BIN)/.installed

lock:  ## refresh constraints.txt: the newest versions pyproject.toml allows, in a fresh venv (then `make test`)
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e '.[test,dask,postgres]' $(CHECKED_PINS); \
	{ sed -n '/^#/p' constraints.txt; "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; } \
		> "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" constraints.txt
	@echo "constraints.txt refreshed: review git diff constraints.txt, then run make test"

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
