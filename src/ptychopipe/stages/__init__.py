"""The pipeline's stages: the registry (this module) and one module per stage.

What belongs here: each stage's entry point, ``run`` in ``stages/<stage>.py``, which
reads the stage's input artifacts (:mod:`ptychopipe.artifacts`), calls its computation,
writes its output artifact and prints its one-line log; and the table of stages below. What does not: the
computation itself, which lives in the domain modules (:mod:`ptychopipe.simulate`,
:mod:`~ptychopipe.ingest`, :mod:`~ptychopipe.grouping`, :mod:`~ptychopipe.normalize`,
:mod:`~ptychopipe.train`, :mod:`~ptychopipe.infer`, :mod:`~ptychopipe.stitch`,
:mod:`~ptychopipe.evaluation`, :mod:`~ptychopipe.baseline`), none of which writes a stage
artifact. Commands that are tools rather than stages (telemetry, report, export,
baseline-compare, bench, ...) are sub-commands of :mod:`ptychopipe.cli` of their own.

Everything that needs to know the stages derives from :data:`STAGES`: the command line
(one ``ptychopipe <stage>`` sub-command per entry, its ``--<input>`` and ``--<output>``
options), the configuration (which frozen options class rebuilds a stage's ``--config``),
the telemetry table (which file under ``results/{scenario}/`` holds each stage's
telemetry), the artifacts table of docs/artifacts.md (``ptychopipe stages-doc``) and the
test that checks every rule in workflow/rules against it.

A stage's function is ``run(options, scenario, out, **named_files)``: the named files are
the entry's ``inputs``, ``optional_inputs`` (None when not given) and ``outputs``. The
functions below are thin: each imports its stage module when called, so that the command
line sets its thread limits before NumPy or TensorFlow start (``cli.set_thread_limits``).

Adding a stage: its options class in :mod:`ptychopipe.config` (its fields declared with
``config.option``, so ``stage_config`` builds it with no branch of its own); its
computation in a domain module (arrays and options in, arrays out, no artifact files);
its artifact class in :mod:`ptychopipe.artifacts` when it writes a new file; its module
``stages/<stage>.py`` with ``run``; one entry here, whose function imports that ``run``
when called; and its rule in workflow/rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import config as C


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    name: the sub-command and the ``stage`` attribute of its artifact; options: its frozen
    options class (:mod:`ptychopipe.config`); inputs: named input files (required);
    out: the file name under ``results/{scenario}/`` that ``--out`` writes; optional_inputs:
    named input files a configuration may not need; outputs: named output files besides
    ``--out``; artifact: the HDF5 file (under ``results/{scenario}/``) that carries the
    stage's attributes and telemetry, when it is not ``out``; telemetry: whether the
    telemetry table lists that artifact under this stage's name; run: the function;
    summary: one line for ``--help`` and the docs."""

    name: str
    options: type
    inputs: tuple[str, ...]
    out: str
    run: Callable[..., None]
    summary: str
    optional_inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    artifact: str = ""
    telemetry: bool = True

    @property
    def telemetry_file(self) -> str:
        """The HDF5 artifact with the stage's attributes and telemetry."""
        return self.artifact or self.out


def _simulate(cfg: C.SimulateConfig, scenario: str, out: str) -> None:
    from .simulate import run

    run(cfg, scenario, out)


def _ingest(cfg: C.IngestConfig, scenario: str, out: str) -> None:
    from .ingest import run

    run(cfg, scenario, out)


def _split(cfg: C.SplitConfig, scenario: str, out: str, simulated: str) -> None:
    from .split import run

    run(cfg, scenario, out=out, simulated=simulated)


def _group(cfg: C.GroupConfig, scenario: str, out: str, simulated: str, split: str) -> None:
    from .group import run

    run(cfg, scenario, out=out, simulated=simulated, split=split)


def _normalize(cfg: C.NormalizeConfig, scenario: str, out: str, simulated: str, split: str, grouped: str) -> None:
    from .normalize import run

    run(cfg, scenario, out=out, simulated=simulated, split=split, grouped=grouped)


def _train(cfg: C.TrainConfig, scenario: str, out: str, normalized: str, history: str, diagnostics: str) -> None:
    from .train import run

    run(cfg, scenario, out=out, normalized=normalized, history=history, diagnostics=diagnostics)


def _infer(cfg: C.InferConfig, scenario: str, out: str, normalized: str, model: str) -> None:
    from .infer import run

    run(cfg, scenario, out=out, normalized=normalized, model=model)


def _stitch(cfg: C.StitchConfig, scenario: str, out: str, inferred: str) -> None:
    from .stitch import run

    run(cfg, scenario, out=out, inferred=inferred)


def _compare(cfg: C.CompareConfig, scenario: str, out: str, simulated: str, grouped: str, normalized: str,
             inferred: str, stitched: str, train: str, json: str, amplitude_png: str, phase_png: str, frc_png: str,
             training_png: str) -> None:
    from .compare import run

    run(cfg, scenario, simulated=simulated, grouped=grouped, normalized=normalized, inferred=inferred,
        stitched=stitched, train=train, out=out, json=json, amplitude_png=amplitude_png, phase_png=phase_png,
        frc_png=frc_png, training_png=training_png)


def _baseline(cfg: C.BaselineConfig, scenario: str, out: str, simulated: str, grouped: str,
              stitched: str | None = None) -> None:
    from .baseline import run

    run(cfg, scenario, out=out, simulated=simulated, grouped=grouped, stitched=stitched)


#: The stages in pipeline order.
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("simulate", C.SimulateConfig, (), "simulated.h5", _simulate,
          "simulate the object, probe, scan and Poisson-noisy far-field patterns"),
    Stage("ingest", C.IngestConfig, (), "simulated.h5", _ingest,
          "import measured data (NPZ or ptychodus; the file is source.file) in place of simulate",
          telemetry=False),  # the table lists simulated.h5 once, under the stage that wrote it
    Stage("split", C.SplitConfig, ("simulated",), "split.h5", _split,
          "split the scan positions into a training and a test region"),
    Stage("group", C.GroupConfig, ("simulated", "split"), "grouped.h5", _group,
          "group overlapping neighbouring patterns, gridsize² per group"),
    Stage("normalize", C.NormalizeConfig, ("simulated", "split", "grouped"), "normalized.h5", _normalize,
          "scale the measured amplitudes to network inputs and estimate the mean object amplitude"),
    Stage("train", C.TrainConfig, ("normalized",), "model.keras", _train,
          "train the network through the forward model on the Poisson likelihood",
          outputs=("history", "diagnostics"), artifact="train.h5"),  # history: train.h5; diagnostics: on failure
    Stage("infer", C.InferConfig, ("normalized", "model"), "inferred.h5", _infer,
          "reconstruct the test groups with the trained model"),
    Stage("stitch", C.StitchConfig, ("inferred",), "stitched.h5", _stitch,
          "stitch the reconstructed patches into the test region"),
    Stage("compare", C.CompareConfig, ("simulated", "grouped", "normalized", "inferred", "stitched", "train"),
          "comparison.h5", _compare, "score the stitched object against the truth (or in data space) and plot it",
          outputs=("json", "amplitude_png", "phase_png", "frc_png", "training_png")),
    Stage("baseline", C.BaselineConfig, ("simulated", "grouped"), "baseline.h5", _baseline,
          "reconstruct the same test patterns with pty-chi (optional iterative reference)",
          optional_inputs=("stitched",), telemetry=False),  # stitched: baseline.initial "reconstruction"
)}


def stage(name: str) -> Stage:
    """The entry of stage ``name``; one-line ConfigError naming the known stages otherwise."""
    try:
        return STAGES[name]
    except KeyError:
        raise C.ConfigError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}") from None


def telemetry_files() -> tuple[tuple[str, str], ...]:
    """(artifact file name, stage name) of the telemetry table's stages, in pipeline order."""
    return tuple((s.telemetry_file, s.name) for s in STAGES.values() if s.telemetry)


def markdown_table() -> str:
    """The stage table of docs/artifacts.md: stage, inputs, artifact and other outputs, summary."""
    def names(xs: tuple[str, ...]) -> str:
        return ", ".join(f"`{x}`" for x in xs) or "–"

    rows = ["| stage | inputs | `--out` (results/{scenario}/) | other outputs | what it does |",
            "|---|---|---|---|---|"]
    for s in STAGES.values():
        inputs = names(s.inputs) + (f" (optional: {names(s.optional_inputs)})" if s.optional_inputs else "")
        outputs = names(s.outputs) + (f" (telemetry: `{s.artifact}`)" if s.artifact else "")
        rows.append(f"| `{s.name}` | {inputs} | `{s.out}` | {outputs} | {s.summary} |")
    return "\n".join(rows) + "\n"


def run_stage(name: str, options: Any, scenario: str, out: str, **files: str | None) -> None:
    """Run stage ``name`` with its options object and named files (what the command line does)."""
    s = stage(name)
    if not isinstance(options, s.options):
        raise TypeError(f"stage {name}: expected {s.options.__name__} options, got {type(options).__name__}")
    s.run(options, scenario, out, **files)
