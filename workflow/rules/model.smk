# Model stages: train -> infer (docs/design.md, 'Reconstruction modes', 'Loss'). The rules stay thin; the logic is in
# src/ptychopipe/{model,train,infer}.py. The Keras backend is TensorFlow unless the
# environment sets KERAS_BACKEND (e.g. KERAS_BACKEND=jax on a GPU node).


rule train:
    input:
        normalized="results/{scenario}/normalized.h5",
    output:
        model="results/{scenario}/model.keras",
        history="results/{scenario}/train.h5",
    log:
        "results/{scenario}/logs/train.log",
    benchmark:
        "results/{scenario}/benchmarks/train.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg=stage_params("train"),
        diagnostics=train_diagnostics,
    shell:
        "python3 -m ptychopipe train --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --normalized {input.normalized} --out {output.model} --history {output.history}"
        " --diagnostics {params.diagnostics} --threads {threads} 3>&2 > {log} 2>&1"


rule infer:
    input:
        normalized="results/{scenario}/normalized.h5",
        # this scenario's own model, or the one infer.model_from names (then nothing trains here)
        model=model_input,
    output:
        "results/{scenario}/inferred.h5",
    log:
        "results/{scenario}/logs/infer.log",
    benchmark:
        "results/{scenario}/benchmarks/infer.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=8000,
    params:
        cfg=stage_params("infer"),
    shell:
        "python3 -m ptychopipe infer --scenario {wildcards.scenario} --config {params.cfg:q}"
        " --normalized {input.normalized} --model {input.model} --out {output}"
        " --threads {threads} 3>&2 > {log} 2>&1"
