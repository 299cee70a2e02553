# ptychopipe — two entry points: `make demo` (main job) and `make test` (test suite; its tiers:
# test-fast, test, test-slow, test-cluster, below);
# `make quality` (long: the full preset, dose sweep included) writes results/report/quality_table.md;
# `make results-doc` copies that table into docs/results.md.
# Both create .venv on first use with only Python 3 (3.11-3.13) and make on the machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# PRESET empty: the preset named by `preset:` in config/scenarios.yaml (quick as shipped), so
# editing that file is enough; `make demo PRESET=full` overrides it for one run.
PRESET ?=
PRESET_ARG = $(if $(PRESET),--config preset=$(PRESET))
CORES  ?= 2

# `snakemake --report` needs every report() file of its targets to exist: add the dose sweep's
# (rule dose_response) and the time-to-quality benchmark's (rule time_to_quality) once built.
# Targets go before --config, which would take them for config entries.
REPORT_TARGETS = all $(if $(wildcard results/report/dose_response.csv),dose_response) \
	$(if $(wildcard results/bench/time_to_quality.csv),time_to_quality)

.PHONY: demo test test-fast test-slow test-cluster venv dry-run quality results-doc rulegraph clean

# Debian/Ubuntu ship `venv` without `ensurepip` unless python3-venv is installed: then the
# venv is created --without-pip and pip is bootstrapped with get-pip.py (needs the network,
# as the pip install below does). Snakemake 9 needs Python >= 3.11; TensorFlow 2.21 has wheels up to 3.13.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 13) else \
		"ptychopipe needs Python 3.11-3.13 (Snakemake 9, TensorFlow 2.21 wheels); %s is %d.%d: make PYTHON=python3.12 ..." % (sys.executable, *v))'
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed (no python3-venv?): bootstrapping pip with get-pip.py"; \
		$(PYTHON) -m venv --clear --without-pip $(VENV) && \
		$(BIN)/python -c "import urllib.request as u; u.urlretrieve('https://bootstrap.pypa.io/get-pip.py', '$(VENV)/get-pip.py')" 2>/dev/null && \
		$(BIN)/python $(VENV)/get-pip.py --quiet; } || { rm -rf $(VENV); \
		echo "could not create $(VENV) with pip: install python3-venv (sudo apt-get install python3-venv) and run make again" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --workflow-profile profiles/local --cores $(CORES) $(PRESET_ARG)
	@# constant default resources: Snakemake 9's --report otherwise warns about an un-awaited
	@# input-size coroutine (disk_mb's default) once per job; resources play no part in a report
	$(BIN)/snakemake $(REPORT_TARGETS) --workflow-profile profiles/local --cores 1 $(PRESET_ARG) \
		--default-resources mem_mb=2000 disk_mb=1000 --report results/report.html
	@echo ""
	@echo "Summary (Markdown): $(CURDIR)/results/report/summary.md"
	@echo "Summary (CSV):      $(CURDIR)/results/report/summary.csv"
	@echo "HTML report:        $(CURDIR)/results/report.html  (self-contained: every figure and table)"

# The suite in tiers (markers: tests/conftest.py, pyproject.toml): `make test-fast` (the unit
# tests: no TensorFlow training, no Snakemake run, no stage process; ~1.5 min on 2 cores),
# `make test` (everything but the longest end-to-end runs, ~8 min) and `make test-slow` (those
# runs: the whole ci DAG, determinism, kill and re-run, module deployment, ~6.5 min); .ci/run
# runs all three.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "unit and not slow" --durations=15

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=10

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=10

# Real SLURM run of the ci DAG on a single-node cluster on localhost (needs root: installs
# slurm-wlm + munge with apt-get if missing, starts and stops the daemons by PID); see
# docs/cluster.md. `timeout` is the outer guard: the test fails, it never hangs.
test-cluster: $(STAMP)
	PTYCHOPIPE_TEST_CLUSTER=1 timeout --kill-after=60 1200 $(BIN)/python -m pytest -q -s -m cluster tests/test_cluster.py

# The four scenarios and the dose sweep (sweeps.dose) on the `full` preset (hours on CPU:
# docs/performance.md), the HTML report with the dose response, then the results table in
# results/report/quality_table.md (replaced on every run). PRESET and CORES override.
# `make results-doc` then copies that table between the quality-table markers of docs/results.md.
quality: PRESET = full
quality: $(STAMP)
	$(BIN)/snakemake all dose_response --workflow-profile profiles/local --cores $(CORES) --config preset=$(PRESET)
	$(BIN)/snakemake all dose_response --workflow-profile profiles/local --cores 1 --config preset=$(PRESET) \
		--default-resources mem_mb=2000 disk_mb=1000 --report results/report.html
	$(BIN)/python -m ptychopipe quality-table --results results --configfile config/scenarios.yaml \
		--preset $(PRESET) --out results/report/quality_table.md
	@echo ""
	@echo "Results table:  $(CURDIR)/results/report/quality_table.md (make results-doc: into docs/results.md)"
	@echo "Dose response:  $(CURDIR)/results/report/dose_response.png and .csv"
	@echo "HTML report:    $(CURDIR)/results/report.html"

results-doc: $(STAMP)
	$(BIN)/python -m ptychopipe quality-table --from-table results/report/quality_table.md --out docs/results.md

# The stage DAG figure of README.md (needs Graphviz's `dot`: apt-get install graphviz).
rulegraph: $(STAMP)
	$(BIN)/snakemake --rulegraph --config preset=ci | dot -Tpng -Gdpi=80 > docs/figures/rulegraph.png

dry-run: $(STAMP)
	$(BIN)/snakemake -n --workflow-profile profiles/local $(PRESET_ARG)

clean:
	rm -rf results .snakemake
