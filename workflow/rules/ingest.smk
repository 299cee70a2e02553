# Measured data in: a scenario with `source.file` set skips simulate; rule ingest converts the
# user's file (NPZ, or a ptychodus product + diffraction file) into results/{scenario}/simulated.h5
# in the simulate stage's layout, and split -> ... -> compare run unchanged (docs/real_data.md).
#
# Two rules can make results/{scenario}/simulated.h5. They are kept apart by per-rule
# wildcard_constraints over disjoint scenario lists (IMPORTED here, SIMULATED on rule simulate;
# rules/common.smk), not by a ruleorder: a ruleorder would still let Snakemake pick the other
# rule when the preferred one's input is missing (e.g. a deleted source file would silently
# fall back to simulation), whereas disjoint constraints make "which rule" a function of the
# config alone, and a missing file a MissingInputException naming it.


rule ingest:
    input:
        source_input,
    output:
        "results/{scenario}/simulated.h5",
    log:
        "results/{scenario}/logs/ingest.log",
    benchmark:
        "results/{scenario}/benchmarks/ingest.tsv"
    wildcard_constraints:
        scenario=scenario_regex(IMPORTED),
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=stage_params("ingest"),
    shell:
        "python3 -m ptychopipe ingest --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --out {output} --threads {threads} 3>&2 > {log} 2>&1"


# Data out (optional targets, not part of `rule all`): the stitched reconstruction with its
# probe, test positions and patterns, as an NPZ and as a ptychodus product + diffraction.h5;
# `ptychopipe export --help`. E.g. snakemake results/gs1_ideal/export/product.h5


rule export_npz:
    input:
        stitched="results/{scenario}/stitched.h5",
        inferred="results/{scenario}/inferred.h5",
        simulated="results/{scenario}/simulated.h5",
        train=train_history_input,
    output:
        "results/{scenario}/export/{scenario}.npz",
    log:
        "results/{scenario}/logs/export_npz.log",
    benchmark:
        "results/{scenario}/benchmarks/export_npz.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "python3 -m ptychopipe export --format npz --stitched {input.stitched} --inferred {input.inferred}"
        " --simulated {input.simulated} --train {input.train} --out {output} 3>&2 > {log} 2>&1"


rule export_ptychodus:
    input:
        stitched="results/{scenario}/stitched.h5",
        inferred="results/{scenario}/inferred.h5",
        simulated="results/{scenario}/simulated.h5",
        train=train_history_input,
    output:
        product="results/{scenario}/export/product.h5",
        diffraction="results/{scenario}/export/diffraction.h5",
    log:
        "results/{scenario}/logs/export_ptychodus.log",
    benchmark:
        "results/{scenario}/benchmarks/export_ptychodus.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "python3 -m ptychopipe export --format ptychodus --stitched {input.stitched} --inferred {input.inferred}"
        " --simulated {input.simulated} --train {input.train} --out {output.product} 3>&2 > {log} 2>&1"
