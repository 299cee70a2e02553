# Evaluation stages: stitch -> compare (per scenario) -> report (all scenarios)
# (docs/design.md, 'Comparison and ambiguities', 'Artifact contract'). Outputs marked report() appear in `snakemake --report results/report.html`,
# with the captions under workflow/report/ (paths below are relative to this file).


report: "../report/workflow.rst"


rule stitch:
    input:
        inferred="results/{scenario}/inferred.h5",
    output:
        "results/{scenario}/stitched.h5",
    log:
        "results/{scenario}/logs/stitch.log",
    benchmark:
        "results/{scenario}/benchmarks/stitch.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("stitch"),
    shell:
        "python3 -m ptychopipe stitch --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --inferred {input.inferred} --out {output} --threads {threads} 3>&2 > {log} 2>&1"


rule compare:
    input:
        simulated="results/{scenario}/simulated.h5",
        grouped="results/{scenario}/grouped.h5",
        normalized="results/{scenario}/normalized.h5",
        inferred="results/{scenario}/inferred.h5",
        stitched="results/{scenario}/stitched.h5",
        train=train_history_input,
    output:
        h5="results/{scenario}/comparison.h5",
        json="results/{scenario}/comparison.json",
        amplitude=report(
            "results/report/{scenario}/amplitude.png",
            caption="../report/amplitude.rst",
            category="Scenarios",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "figure": "amplitude"},
        ),
        phase=report(
            "results/report/{scenario}/phase.png",
            caption="../report/phase.rst",
            category="Scenarios",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "figure": "phase"},
        ),
        frc=report(
            "results/report/{scenario}/frc.png",
            caption="../report/frc.rst",
            category="Scenarios",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "figure": "FRC"},
        ),
        training=report(
            "results/report/{scenario}/training.png",
            caption="../report/training.rst",
            category="Scenarios",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "figure": "training curves"},
        ),
    log:
        "results/{scenario}/logs/compare.log",
    benchmark:
        "results/{scenario}/benchmarks/compare.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("compare"),
    shell:
        "python3 -m ptychopipe compare --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --simulated {input.simulated} --grouped {input.grouped} --normalized {input.normalized}"
        " --inferred {input.inferred} --stitched {input.stitched} --train {input.train}"
        " --out {output.h5} --json {output.json} --amplitude-png {output.amplitude}"
        " --phase-png {output.phase} --frc-png {output.frc} --training-png {output.training}"
        " --threads {threads} 3>&2 > {log} 2>&1"


rule data_figure:
    input:
        simulated="results/{scenario}/simulated.h5",
        split="results/{scenario}/split.h5",
    output:
        report(
            "results/report/{scenario}/data.png",
            caption="../report/data.rst",
            category="Scenarios",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "figure": "inputs"},
        ),
    log:
        "results/{scenario}/logs/data_figure.log",
    benchmark:
        "results/{scenario}/benchmarks/data_figure.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "python3 -m ptychopipe data-figure --scenario {wildcards.scenario} --simulated {input.simulated}"
        " --split {input.split} --out {output} 3>&2 > {log} 2>&1"


rule summary:
    input:
        comparisons=per_scenario("results/{scenario}/comparison.json"),
        stitched=per_scenario("results/{scenario}/stitched.h5"),  # the all-scenarios grid
        simulated=per_scenario("results/{scenario}/simulated.h5"),
        inputs_figures=per_scenario("results/report/{scenario}/data.png"),  # linked from summary.md
        baselines=baseline_comparisons(),  # scenarios with baseline.enabled (rules/baseline.smk); often none
    output:
        md=report(
            "results/report/summary.md",
            caption="../report/summary.rst",
            category="Summary",
        ),
        csv=report(
            "results/report/summary.csv",
            caption="../report/summary_csv.rst",
            category="Summary",
        ),
        overview=report(
            "results/report/overview.png",
            caption="../report/overview.rst",
            category="Summary",
        ),
        grid=report(
            "results/report/reconstructions.png",
            caption="../report/reconstructions.rst",
            category="Summary",
        ),
    log:
        "results/logs/summary.log",
    benchmark:
        "results/benchmarks/summary.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        preset=PRESET,  # provenance recorded in the summary
        config_hash=RUN_CONFIG_HASH,
    shell:
        "python3 -m ptychopipe report --comparisons {input.comparisons} --baselines {input.baselines}"
        " --md {output.md} --csv {output.csv} --preset {params.preset} --config-hash {params.config_hash}"
        " --overview {output.overview} --grid {output.grid} --stitched {input.stitched}"
        " --simulated {input.simulated} --threads {threads} 3>&2 > {log} 2>&1"


# Dose response (not part of `rule all`): the dose-sweep scenarios (sweeps over `nphotons` in
# config/scenarios.yaml, e.g. `sweeps.dose`) run through compare, then one figure and table of
# amplitude / phase Pearson r and amplitude bias vs photons per pattern. Build it with
# `snakemake dose_response`; add `dose_response` to the targets of `snakemake --report`.


rule dose_response:
    input:
        comparisons=dose_comparisons(),
    output:
        png=report(
            "results/report/dose_response.png",
            caption="../report/dose_response.rst",
            category="Dose response",
        ),
        csv=report(
            "results/report/dose_response.csv",
            caption="../report/dose_response_csv.rst",
            category="Dose response",
        ),
    log:
        "results/logs/dose_response.log",
    benchmark:
        "results/benchmarks/dose_response.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        nphotons=dose_nphotons(),
    shell:
        "python3 -m ptychopipe dose-response --comparisons {input.comparisons} --nphotons {params.nphotons}"
        " --png {output.png} --csv {output.csv} --threads {threads} 3>&2 > {log} 2>&1"
