# segdeck: two commands. `make run` opens the TUI on the sample photos; `make test` runs the suite.
# Each creates .venv on first use (torch from the local pinned wheel, sam2 built without CUDA).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.segdeck-installed
SAMPLES ?= samples

# Consumers (Datumaro, labelme) that the export round-trip tests drive live in their own venv:
# labelme pulls PyQt5 and opencv-python-headless, which would shadow our cv2. Created once;
# if it cannot be (offline), `make test` goes on and those tests skip, saying why.
CONSUMERS       := .venv-consumers
CONSUMERS_STAMP := $(CONSUMERS)/.installed
CONSUMERS_PKGS  := "datumaro>=1.13,<2" "labelme>=5.5"

.PHONY: run test venv consumers bench lint keys-readme clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation "sam2>=1.1"
	$(BIN)/pip install -q -e ".[sam,deep,dev,ray]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/segdeck samples $(SAMPLES)
	$(BIN)/segdeck tui $(SAMPLES)

test: $(STAMP) consumers
	SEGDECK_CONSUMERS_PYTHON=$(CURDIR)/$(CONSUMERS)/bin/python $(BIN)/python -m pytest -q tests

consumers:
	@test -f $(CONSUMERS_STAMP) || { \
	  ( test -x $(CONSUMERS)/bin/python || $(PYTHON) -m venv $(CONSUMERS) ) \
	  && $(CONSUMERS)/bin/pip install -q --disable-pip-version-check $(CONSUMERS_PKGS) > $(CONSUMERS)/install.log 2>&1 \
	  && touch $(CONSUMERS_STAMP) \
	  || echo "note: $(CONSUMERS) could not be created (see $(CONSUMERS)/install.log); export consumer tests will skip"; }

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .

keys-readme: $(STAMP)
	$(BIN)/segdeck keys --update-readme README.md

clean:
	rm -rf $(VENV) $(CONSUMERS) .pytest_cache
