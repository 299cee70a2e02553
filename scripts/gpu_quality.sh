#!/usr/bin/env bash
# `make quality` on a GPU node through the Keras JAX backend (a node with JAX and a GPU but
# no TensorFlow; docs/performance.md, "GPU"). Same DAG, same artifacts, same results table as
# `make quality`; every train.h5 records the device (attr `device`), so the table says which
# numbers came from the GPU. Run from the repository root with a Python that has this
# project's dependencies (snakemake, keras, jax, h5py, scipy, scikit-image, matplotlib,
# jsonschema) and src/ on PYTHONPATH or installed:
#
#   PRESET=full CORES=16 scripts/gpu_quality.sh
#
# PY (python3), PRESET (full) and CORES (all) override. Several train jobs share the GPU, so
# JAX must not pre-allocate most of its memory in the first one.
set -euo pipefail
PY=${PY:-python3}
PRESET=${PRESET:-full}
CORES=${CORES:-$(nproc)}
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false GIT_PYTHON_REFRESH=quiet
snake=("$PY" -m snakemake -s workflow/Snakefile --workflow-profile profiles/local --scheduler greedy)
"${snake[@]}" --cores "$CORES" --keep-going --rerun-incomplete all dose_response --config preset="$PRESET"
"$PY" -m ptychopipe quality-table --results results --configfile config/scenarios.yaml \
    --preset "$PRESET" --out results/report/quality_table.md
"${snake[@]}" --cores 1 all dose_response --config preset="$PRESET" \
    --default-resources mem_mb=2000 disk_mb=1000 --report results/report.html
echo "Results table: results/report/quality_table.md (make results-doc: into docs/results.md); HTML report: results/report.html"
