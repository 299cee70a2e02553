# Iterative reference (optional): per scenario with `baseline.enabled: true`, pty-chi reconstructs
# the same test patterns the PINN reconstructed (known probe, fixed positions), and
# baseline_compare scores it against the truth (or in data space) next to the PINN; the report
# adds a "PINN vs iterative" section. Needs the optional extra: pip install -e '.[baselines]'
# (src/ptychopipe/baseline/, docs/real_data.md).


rule baseline:
    input:
        simulated="results/{scenario}/simulated.h5",
        grouped="results/{scenario}/grouped.h5",
        # the starting object when baseline.initial is "reconstruction" (else no input)
        stitched=baseline_start,
    output:
        "results/{scenario}/baseline.h5",
    log:
        "results/{scenario}/logs/baseline.log",
    benchmark:
        "results/{scenario}/benchmarks/baseline.tsv"
    wildcard_constraints:
        scenario=scenario_regex(BASELINE),
    conda:
        BASELINE_CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("baseline"),
        start=lambda wildcards, input: (
            f"--stitched {input.stitched}" if input.stitched else ""
        ),
    shell:
        "python3 -m ptychopipe baseline --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --simulated {input.simulated} --grouped {input.grouped} {params.start} --out {output}"
        " --threads {threads} 3>&2 > {log} 2>&1"


rule baseline_compare:
    input:
        baseline="results/{scenario}/baseline.h5",
        simulated="results/{scenario}/simulated.h5",
        stitched="results/{scenario}/stitched.h5",
        inferred="results/{scenario}/inferred.h5",
        comparison="results/{scenario}/comparison.json",
        # the PINN inference job's wall time (Snakemake's benchmark of rule infer)
        infer_benchmark="results/{scenario}/benchmarks/infer.tsv",
    output:
        json="results/{scenario}/baseline_comparison.json",
        figure=report(
            "results/report/{scenario}/baseline.png",
            caption="../report/baseline.rst",
            category="Scenarios",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "figure": "PINN vs iterative"},
        ),
    log:
        "results/{scenario}/logs/baseline_compare.log",
    benchmark:
        "results/{scenario}/benchmarks/baseline_compare.tsv"
    wildcard_constraints:
        scenario=scenario_regex(BASELINE),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("compare"),
    shell:
        "python3 -m ptychopipe baseline-compare --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --baseline {input.baseline} --simulated {input.simulated} --stitched {input.stitched}"
        " --inferred {input.inferred} --comparison {input.comparison}"
        " --infer-benchmark {input.infer_benchmark} --out {output.json} --figure {output.figure}"
        " --threads {threads} 3>&2 > {log} 2>&1"
