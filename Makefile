# segdeck: two commands. `make run` opens the TUI on the sample photos; `make test` runs the suite.
# Each creates .venv on first use (torch from the local pinned wheel, sam2 built without CUDA).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.segdeck-installed
SAMPLES ?= samples

.PHONY: run test venv bench lint keys-readme clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation "sam2>=1.1"
	$(BIN)/pip install -q -e ".[sam,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/segdeck samples $(SAMPLES)
	$(BIN)/segdeck tui $(SAMPLES)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .

keys-readme: $(STAMP)
	$(BIN)/segdeck keys --update-readme README.md

clean:
	rm -rf $(VENV) .pytest_cache
