# ptychopipe — two entry points: `make demo` (main job) and `make test` (test suite).
# Both create .venv on first use with only Python 3 (>= 3.10) on the machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= quick
CORES  ?= 2

.PHONY: demo test venv dry-run clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --workflow-profile profiles/local --cores $(CORES) --config preset=$(PRESET)

test: $(STAMP)
	$(BIN)/python -m pytest -q

dry-run: $(STAMP)
	$(BIN)/snakemake -n --workflow-profile profiles/local --config preset=$(PRESET)

clean:
	rm -rf results .snakemake
