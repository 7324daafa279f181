# Two commands: `make run` and `make test`. Both create the virtualenv they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test fuzz lint definitions bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fhir-server serve --host 127.0.0.1 --port 8080 --db ./data/fhir.sqlite3

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/test_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

definitions: $(STAMP)
	$(BIN)/python tools/import_core_definitions.py

bench: $(STAMP)
	$(BIN)/python benchmarks/crud.py

clean:
	rm -rf $(VENV) .pytest_cache
