# Time to quality (optional target, not part of `rule all`): `snakemake time_to_quality` reconstructs
# the test patterns of the scenarios in `bench.scenarios` with the pipeline's trained models and with
# pty-chi LSQML, side by side on this machine, and scores both on the same pixels
# (src/ptychopipe/benchmarks/timetoquality.py, docs/performance.md). Needs the pty-chi extra, like rule baseline.


rule time_to_quality:
    input:
        unpack(bench_inputs),
    output:
        csv=report(
            "results/bench/time_to_quality.csv",
            caption="../report/time_to_quality_csv.rst",
            category="Time to quality",
        ),
        md="results/bench/time_to_quality.md",
        png=report(
            "results/bench/time_to_quality.png",
            caption="../report/time_to_quality.rst",
            category="Time to quality",
        ),
    log:
        "results/logs/time_to_quality.log",
    benchmark:
        "results/benchmarks/time_to_quality.tsv"
    conda:
        BASELINE_CONDA_ENV
    threads: 2
    resources:
        mem_mb=8000,
    params:
        preset=PRESET,
        scenarios=" ".join(BENCH["scenarios"]),
        epochs=BENCH["epochs"],
        starts=" ".join(BENCH["starts"]),
    shell:
        "python3 -m ptychopipe bench time-to-quality --preset {params.preset} --scenarios {params.scenarios}"
        " --epochs {params.epochs} --starts {params.starts} --out results/bench --no-build"
        " --threads {threads} 3>&2 > {log} 2>&1"
