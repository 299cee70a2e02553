# Data stages: simulate -> split -> group -> normalize (docs/design.md, 'Forward model', 'Dose and normalisation').


rule simulate:
    wildcard_constraints:  # imported scenarios get simulated.h5 from rule ingest (rules/ingest.smk)
        scenario=scenario_regex(SIMULATED),
    input:
        probe=probe_input,
    output:
        "results/{scenario}/simulated.h5",
    params:
        cfg=stage_params("simulate"),
    log:
        "results/{scenario}/logs/simulate.log",
    benchmark:
        "results/{scenario}/benchmarks/simulate.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        CONDA_ENV
    shell:
        "python3 -m ptychopipe simulate --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --out {output} --threads {threads} 3>&2 > {log} 2>&1"


rule split:
    input:
        simulated="results/{scenario}/simulated.h5",
    output:
        "results/{scenario}/split.h5",
    params:
        cfg=stage_params("split"),
    log:
        "results/{scenario}/logs/split.log",
    benchmark:
        "results/{scenario}/benchmarks/split.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        CONDA_ENV
    shell:
        "python3 -m ptychopipe split --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --simulated {input.simulated} --out {output} --threads {threads} 3>&2 > {log} 2>&1"


rule group:
    input:
        simulated="results/{scenario}/simulated.h5",
        split="results/{scenario}/split.h5",
    output:
        "results/{scenario}/grouped.h5",
    params:
        cfg=stage_params("group"),
    log:
        "results/{scenario}/logs/group.log",
    benchmark:
        "results/{scenario}/benchmarks/group.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        CONDA_ENV
    shell:
        "python3 -m ptychopipe group --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --simulated {input.simulated} --split {input.split} --out {output} --threads {threads} 3>&2 > {log} 2>&1"


rule normalize:
    input:
        simulated="results/{scenario}/simulated.h5",
        split="results/{scenario}/split.h5",
        grouped="results/{scenario}/grouped.h5",
    output:
        "results/{scenario}/normalized.h5",
    params:
        cfg=stage_params("normalize"),
    log:
        "results/{scenario}/logs/normalize.log",
    benchmark:
        "results/{scenario}/benchmarks/normalize.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        CONDA_ENV
    shell:
        "python3 -m ptychopipe normalize --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --simulated {input.simulated} --split {input.split} --grouped {input.grouped}"
        " --out {output} --threads {threads} 3>&2 > {log} 2>&1"


rule telemetry:
    input:  # after the last stage, so the table covers every artifact of every scenario
        per_scenario("results/{scenario}/comparison.h5"),
    output:
        md="results/telemetry.md",
        csv=report("results/telemetry.csv", caption="../report/telemetry.rst", category="Telemetry"),
    params:
        scenarios=",".join(DEFAULT),
    log:
        "results/logs/telemetry.log",
    benchmark:
        "results/benchmarks/telemetry.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        CONDA_ENV
    shell:
        "python3 -m ptychopipe telemetry --results results --scenarios={params.scenarios}"
        " --md {output.md} --csv {output.csv} 3>&2 > {log} 2>&1"
