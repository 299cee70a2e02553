# Data stages: simulate -> split -> group -> normalize (docs/design.md, 'Forward model', 'Dose and normalisation').


rule simulate:
    input:
        probe=probe_input,
    output:
        "results/{scenario}/simulated.h5",
    log:
        "results/{scenario}/logs/simulate.log",
    benchmark:
        "results/{scenario}/benchmarks/simulate.tsv"
    wildcard_constraints:  # imported scenarios get simulated.h5 from rule ingest (rules/ingest.smk)
        scenario=scenario_regex(SIMULATED),
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("simulate"),
    shell:
        "python3 -m ptychopipe simulate --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --out {output} --threads {threads} 3>&2 > {log} 2>&1"


rule split:
    input:
        simulated="results/{scenario}/simulated.h5",
    output:
        "results/{scenario}/split.h5",
    log:
        "results/{scenario}/logs/split.log",
    benchmark:
        "results/{scenario}/benchmarks/split.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        cfg=stage_params("split"),
    shell:
        "python3 -m ptychopipe split --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --simulated {input.simulated} --out {output} --threads {threads} 3>&2 > {log} 2>&1"


rule group:
    input:
        simulated="results/{scenario}/simulated.h5",
        split="results/{scenario}/split.h5",
    output:
        "results/{scenario}/grouped.h5",
    log:
        "results/{scenario}/logs/group.log",
    benchmark:
        "results/{scenario}/benchmarks/group.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        cfg=stage_params("group"),
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
    log:
        "results/{scenario}/logs/normalize.log",
    benchmark:
        "results/{scenario}/benchmarks/normalize.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        cfg=stage_params("normalize"),
    shell:
        "python3 -m ptychopipe normalize --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --simulated {input.simulated} --split {input.split} --grouped {input.grouped}"
        " --out {output} --threads {threads} 3>&2 > {log} 2>&1"


rule telemetry:
    input:  # every stage artifact of every scenario (the last stage's too): exactly what it reads
        telemetry_inputs,
    output:
        md="results/telemetry.md",
        csv=report(
            "results/telemetry.csv",
            caption="../report/telemetry.rst",
            category="Telemetry",
        ),
    log:
        "results/logs/telemetry.log",
    benchmark:
        "results/benchmarks/telemetry.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
    shell:
        "python3 -m ptychopipe telemetry --md {output.md} --csv {output.csv} {input}"
        " 3>&2 > {log} 2>&1"
