"""Configuration: load, validate, merge, and split into frozen per-stage configs.

The predecessor of this pipeline shared one mutable, module-level parameter
dictionary between stages; it went stale and produced NaN training. Here every
stage receives its own frozen dataclass, built once from the validated YAML and
passed explicitly; the stage records it (``config_json``, ``config_hash``) in
its output. No code in this package changes module-level state after import (the
module-level tables are constants).

Flow: ``config/scenarios.yaml`` --load_yaml--> raw dict --validate_raw--> (schema
checked) --resolve_scenarios--> {scenario: merged params} --stage_config-->
``SimulateConfig`` / ``GroupConfig`` / ... (frozen).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import jsonschema
import yaml

from .errors import PtychopipeError
from .formats import FORMATS

#: The schema ships with the package (a link to workflow/schemas/config.schema.yaml in the
#: repository; a copy in a built wheel), so an installed ptychopipe validates without a checkout.
SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
#: A scenario name starts with a letter or digit (a leading "-" would read as an option on the
#: stage's command line) and is a safe file name (no "/", no "..").
SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class ConfigError(PtychopipeError, ValueError):
    """A configuration problem, with a one-line message naming file and key."""


# --------------------------------------------------------------------------- stage configs


def option(description: str, *, key: str, default: Any = dataclasses.MISSING, unit: str = "",
           minimum: float | None = None, maximum: float | None = None,
           exclusive_minimum: float | None = None, exclusive_maximum: float | None = None,
           choices: tuple[Any, ...] | None = None, when: Callable[[Mapping[str, Any]], bool] | None = None,
           derive: Callable[[Mapping[str, Any]], Any] | None = None) -> Any:
    """A typed option's field: its default, its bounds, its unit and its description, in one
    place. ``key``: the dotted key of config/scenarios.yaml it is read from (the schema's
    property there states the same bounds, unit and description: tests/test_options.py).
    ``choices``: the allowed values, where only a few are. The options class checks the bounds
    and choices when built (:func:`check_options`).

    ``when`` and ``derive`` are functions of one scenario's merged params (a dict), for
    :func:`options_from_params`. ``when`` (-> bool, e.g. :func:`_param_is`): the field applies
    only where it is true; elsewhere it is None and unchecked, so editing the parameter
    re-runs nothing (the line parameters of a blobs object). ``derive`` (-> the value): the
    field is computed from the params instead of read at ``key``, which then names the
    parameter it is derived from (the scan positions, n_images × gridsize²). ``default``: the
    value that config/scenarios.yaml's ``defaults:`` give, ``when`` and ``derive`` applied."""
    bounds = {k: v for k, v in (("minimum", minimum), ("maximum", maximum), ("exclusiveMinimum", exclusive_minimum),
                                ("exclusiveMaximum", exclusive_maximum)) if v is not None}
    return dataclasses.field(default=default, metadata={"description": description, "key": key, "unit": unit,
                                                        "bounds": bounds, "choices": choices, "when": when,
                                                        "derive": derive})


def check_options(options: Any) -> None:
    """ConfigError (one line: key, bound, value) when a field of an options instance is out of
    the bounds its :func:`option` declares (a None field with a ``when`` does not apply: not
    checked)."""
    tests = {"minimum": (lambda v, b: v >= b, ">="), "maximum": (lambda v, b: v <= b, "<="),
             "exclusiveMinimum": (lambda v, b: v > b, ">"), "exclusiveMaximum": (lambda v, b: v < b, "<")}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value is None and f.metadata.get("when"):
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{f.metadata['key']}: expected one of {list(choices)}, got {value!r}")
        for kind, bound in f.metadata.get("bounds", {}).items():
            ok, sign = tests[kind]
            if not ok(value, bound):
                raise ConfigError(f"{f.metadata['key']}: expected {sign} {bound:g}, got {value!r}")


def _get_dotted(params: Mapping[str, Any], dotted: str) -> Any:
    """The value of ``params`` at a dotted key ("object.kind")."""
    for part in dotted.split("."):
        params = params[part]
    return params


def _param_is(key: str, value: Any) -> Callable[[Mapping[str, Any]], bool]:
    """An :func:`option`'s ``when``: true for the params that hold ``value`` at the dotted ``key``."""
    return lambda params: _get_dotted(params, key) == value


def ideal_footprint_px(params: Mapping[str, Any]) -> float:
    """The ideal probe's central-lobe diameter (px, float) of one scenario's merged ``params``:
    ``probe.footprint_px``, or N/2 when it is null, so the default follows N (docs/design.md,
    'Configuration contract'). The simulate config records the resolved number, so null and 32
    at N = 64 are the same config (same hash)."""
    fp = params["probe"]["footprint_px"]
    return float(fp) if fp is not None else int(params["N"]) / 2


def is_imported(params: Mapping[str, Any]) -> bool:
    """True when the scenario imports measured data (``source.file`` set) instead of simulating."""
    return bool((params.get("source") or {}).get("file"))


def _seed() -> Any:
    return option("Seed of the scan positions, the Poisson noise, the grouping and the training.", key="seed",
                  default=1, minimum=0)


def _pattern_size(default: int | None = 64, **kw: Any) -> Any:
    return option("Diffraction pattern and object patch size (N x N).", key="N", default=default, unit="px",
                  choices=(32, 64, 128, 256), **kw)


def _gridsize() -> Any:
    return option("Group side: C = gridsize² overlapping patterns are reconstructed together (1 or 2 typical).",
                  key="gridsize", default=1, minimum=1, maximum=4)


@dataclass(frozen=True)
class ObjectConfig:
    """The simulated object; only the fields of its ``kind`` are set (the others are None),
    so editing an unused one re-runs nothing."""

    kind: str = option("Object model: lines (seeded random line segments, Gaussian-blurred) or blobs (smooth Gaussian "
                       "blobs), independent maps in amplitude and phase.", key="object.kind", default="lines",
                       choices=("lines", "blobs"))
    size: int = option("Object height = width; at least N + 2·scan.buffer_px + 1.", key="object.size", default=392,
                       unit="px", minimum=32, maximum=8192)
    seed: int = option("Object seed, independent of `seed`.", key="object.seed", default=42, minimum=0)
    n_lines: int | None = option("Line segments per map (the amplitude and phase maps are independent).",
                                 key="object.n_lines", default=400, minimum=1, when=_param_is("object.kind", "lines"))
    line_length_px: tuple[float, float] | None = option("[min, max] segment length, min < max.",
                                                        key="object.line_length_px", default=(8.0, 64.0), unit="px",
                                                        when=_param_is("object.kind", "lines"))
    blur_sigma_px: float | None = option("Standard deviation of the Gaussian blur of the line maps.",
                                         key="object.blur_sigma_px", default=1.0, unit="px", minimum=0,
                                         when=_param_is("object.kind", "lines"))
    amplitude_range: tuple[float, float] = option("[min, max] object amplitude, 0 <= min < max; the background sits "
                                                  "at min.", key="object.amplitude_range", default=(0.5, 1.5),
                                                  unit="object amplitude")
    phase_range: tuple[float, float] = option("[min, max] object phase, min < max; the background sits at min.",
                                              key="object.phase_range", default=(-1.0, 1.0), unit="rad")
    n_blobs: int | None = option("blobs: Gaussian blobs per map (the amplitude and phase maps are independent).",
                                 key="object.n_blobs", default=None, minimum=1, when=_param_is("object.kind", "blobs"))
    blob_sigma_px: tuple[float, float] | None = option("blobs: [min, max] standard deviation of a blob, min < max.",
                                                       key="object.blob_sigma_px", default=None, unit="px",
                                                       when=_param_is("object.kind", "blobs"))

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class ProbeConfig:
    """The illumination; only the fields of its ``kind`` are set (the others are None), so
    editing an unused one (footprint_px of a custom probe, file of an ideal one) re-runs nothing."""

    kind: str = option("ideal: a circular pupil focused to a spot (real, point-symmetric); custom: read from `file`.",
                       key="probe.kind", default="ideal", choices=("ideal", "custom"))
    footprint_px: float | None = option("Ideal probe: diameter of the focused spot's central lobe, < N; null = N/2 "
                                        "(recorded as the number).", key="probe.footprint_px", default=32.0,
                                        unit="px", exclusive_minimum=0, when=_param_is("probe.kind", "ideal"),
                                        derive=ideal_footprint_px)
    file: str | None = option("Custom probe: NPZ or HDF5 file holding an N x N complex array (required for kind "
                              "custom; a rule input).", key="probe.file", default=None,
                              when=_param_is("probe.kind", "custom"))
    key: str | None = option("Custom probe: the NPZ key or HDF5 dataset path of the probe array in `file`.",
                             key="probe.key", default=None, when=_param_is("probe.kind", "custom"))

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class SimulateConfig:
    """The simulated dataset (simulate stage): pattern size, scan, dose, seed, object and probe."""

    N: int = _pattern_size()
    n_positions: int = option("Scan positions = n_images × gridsize².", key="scan.n_images", default=2000, minimum=1,
                              derive=lambda p: int(p["scan"]["n_images"]) * int(p["gridsize"]) ** 2)
    buffer_px: float = option("Distance positions keep from the object edge, beyond N/2.", key="scan.buffer_px",
                              default=10.0, unit="px", minimum=0)
    nphotons: float = option("Dose: expected photons per pattern, mean over the dataset; sets the probe's absolute "
                             "scale.", key="nphotons", default=1e9, unit="photons per pattern", exclusive_minimum=0)
    seed: int = _seed()
    object: ObjectConfig = ObjectConfig()
    probe: ProbeConfig = ProbeConfig()

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class SplitConfig:
    """The train/test split of the scan (split stage)."""

    fraction: float = option("Train = the lower `fraction` of the scan's y range; test = the rest (contiguous halves "
                             "at 0.5).", key="split.fraction", default=0.5, exclusive_minimum=0, exclusive_maximum=1)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class GroupConfig:
    """Grouping overlapping neighbours (group stage)."""

    gridsize: int = _gridsize()
    n_groups: int = option("Groups per split (train and test).", key="group.n_groups", default=1000, minimum=1)
    neighbour_count: int = option("K: group members are drawn from a seed pattern's K nearest neighbours; "
                                  "K >= gridsize².", key="group.neighbour_count", default=4, minimum=1)
    seed: int = _seed()

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class NormalizeConfig:
    """Input scaling (normalize stage): the scale targets (N/2)² total power per pattern
    (docs/design.md, 'Dose and normalisation')."""

    N: int = _pattern_size()

    def __post_init__(self) -> None:
        check_options(self)


def _iterations() -> Any:
    return option("Physics iterations per group (unrolled: at most 10, each with learned parameters; "
                  "difference_map, gradient: fixed, network.GroupEstimate).",
                  key="model.estimate_iterations", default=10, minimum=1, maximum=1000)


def _noise_tolerance() -> Any:
    return option("Half-width of the modulus constraint (difference_map, unrolled); 0 = exact modulus, which loses "
                  "the amplitude below ~1e6 photons.", key="model.estimate_noise_tolerance", default=1.0,
                  unit="standard deviations of the measured amplitude", minimum=0)


@dataclass(frozen=True)
class DifferenceMapOptions:
    """A fixed number of exit-wave difference-map iterations per group, at training and at
    inference (:class:`ptychopipe.network.GroupEstimate`), then the U-Net correction."""

    iterations: int = _iterations()
    noise_tolerance: float = _noise_tolerance()
    algorithm: str = "difference_map"
    #: A U-Net corrects this estimate (the model's ``unet`` options are set).
    corrected: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class GradientOptions:
    """A fixed number of preconditioned gradient-descent iterations with Nesterov momentum per
    group (:class:`ptychopipe.network.GroupEstimate`), then the U-Net correction."""

    iterations: int = _iterations()
    momentum: float = option("Nesterov momentum of those iterations (gradient algorithm only).",
                             key="model.estimate_momentum", default=0.9, minimum=0, exclusive_maximum=1)
    algorithm: str = "gradient"
    corrected: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_options(self)


#: Most iterations of the unrolled estimate (its parameters are learned per iteration).
MAX_UNROLLED_ITERATIONS = 10


@dataclass(frozen=True)
class UnrolledOptions:
    """Learned unrolled difference-map iterations (:class:`ptychopipe.network.UnrolledEstimate`):
    relaxation, tolerance and a small prior CNN learned per iteration; no U-Net."""

    iterations: int = _iterations()
    noise_tolerance: float = _noise_tolerance()
    prior_filters: int = option("unrolled only: channels of the small CNN (two 3x3 layers) applied to the object "
                                "between the learned iterations.", key="model.prior_filters", default=8,
                                minimum=1, maximum=64)
    algorithm: str = "unrolled"
    corrected: ClassVar[bool] = False  # the learned iterations are the whole model

    def __post_init__(self) -> None:
        check_options(self)
        if self.iterations > MAX_UNROLLED_ITERATIONS:
            raise ConfigError(f"model.estimate_iterations: expected <= {MAX_UNROLLED_ITERATIONS} for estimate_algorithm "
                              f"unrolled (learned iterations, a small fixed number), got {self.iterations}")


@dataclass(frozen=True)
class UNetOptions:
    """The U-Net that corrects a fixed physics estimate (:func:`ptychopipe.network.unet_heads`)."""

    filters: int = option("U-Net filters of the first encoder level; doubled per level.", key="model.filters",
                          default=32, minimum=1)
    depth: int = option("U-Net encoder levels (each halves the patch size).", key="model.depth", default=3,
                        minimum=1, maximum=5)
    phase_max_rad: float = option("Largest phase correction of the estimate: phase = arg(estimate) + "
                                  "phase_max_rad·tanh(u).", key="model.phase_max_rad", default=3.14159, unit="rad",
                                  exclusive_minimum=0)

    def __post_init__(self) -> None:
        check_options(self)


#: The group-estimate algorithms (``model.estimate_algorithm``) and their options classes; the
#: network builds each with its entry of :data:`ptychopipe.network.ESTIMATE_LAYERS`.
ESTIMATE_OPTIONS: dict[str, type] = {"difference_map": DifferenceMapOptions, "gradient": GradientOptions,
                                     "unrolled": UnrolledOptions}
EstimateOptions = DifferenceMapOptions | GradientOptions | UnrolledOptions


@dataclass(frozen=True)
class ModelConfig:
    """The network: pattern size N, gridsize, its group estimate (one options class per
    algorithm, each with only its own knobs) and, for the fixed estimates, the U-Net."""

    estimate: EstimateOptions
    unet: UNetOptions | None  # None: the unrolled estimate has no U-Net
    N: int = _pattern_size()
    gridsize: int = _gridsize()

    def __post_init__(self) -> None:
        check_options(self)


def estimate_options(m: Mapping[str, Any]) -> EstimateOptions:
    """The estimate's options from a scenario's ``model:`` parameters (flat YAML keys)."""
    algorithm = str(m["estimate_algorithm"])
    cls = ESTIMATE_OPTIONS[algorithm]
    return options_from_params(cls, {"model": m})


def options_from_params(cls: type, params: Mapping[str, Any], **fields: Any) -> Any:
    """An options class built from one scenario's merged ``params``: each :func:`option` field
    read at its dotted ``key`` (computed by its ``derive``; None where its ``when`` is false) and
    cast to its type (:func:`_cast`); a field whose type is an options class is built the same
    way from the same ``params``; ``fields`` give the others (nested options chosen by a
    parameter, such as the estimate algorithm's)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in fields:
            continue
        if not meta:
            if dataclasses.is_dataclass(hints[f.name]):
                fields[f.name] = options_from_params(hints[f.name], params)
        elif meta["when"] is not None and not meta["when"](params):
            fields[f.name] = None  # does not apply to these params
        else:
            value = meta["derive"](params) if meta["derive"] else _get_dotted(params, meta["key"])
            fields[f.name] = _cast(hints[f.name], value)
    return cls(**fields)


def _cast(kind: Any, value: Any) -> Any:
    """``value`` as the field type ``kind``: an int given for a float is stored as a float, a
    list as a tuple of the declared element types, None stays None for an optional field (so the
    config hash does not depend on how a number was written)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        return None if value is None else _cast(next(a for a in args if a is not type(None)), value)
    if typing.get_origin(kind) is tuple:
        return tuple(_cast(a, v) for a, v in zip(args, value))
    return kind(value)


@dataclass(frozen=True)
class LossConfig:
    """Optional loss terms besides the Poisson deviance, off by default."""

    mae_weight: float = option("Weight of an MAE term on normalised amplitudes sqrt(counts).",
                               key="train.loss.mae_weight", default=0.0, minimum=0)
    tv_weight: float = option("Weight of a total-variation term on the object patches.",
                              key="train.loss.tv_weight", default=0.0, minimum=0)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class TrainConfig:
    """Training (train stage): Adam on the Poisson likelihood, the model's options and the loss."""

    model: ModelConfig
    loss: LossConfig
    batch_size: int = option("Groups per Adam step (gridsize 2: 16 groups = 64 patterns).", key="train.batch_size",
                             default=16, minimum=1)
    epochs: int = option("Most epochs (passes over the training groups); early stopping may end sooner.",
                         key="train.epochs", default=60, minimum=1)
    learning_rate: float = option("Adam's initial step size (the loss is divided by the mean count, so it is "
                                  "dimensionless).", key="train.learning_rate", default=1e-3, exclusive_minimum=0)
    min_learning_rate: float = option("Floor of the cosine decay of the learning rate; <= learning_rate.",
                                      key="train.min_learning_rate", default=1e-5, minimum=0)
    validation_fraction: float = option("Fraction of the training groups held out for val_loss: a band along y next "
                                        "to the test region.", key="train.validation_fraction", default=0.1,
                                        minimum=0, exclusive_maximum=1)
    early_stopping_patience: int = option("Epochs without val_loss improvement before training stops.",
                                          key="train.early_stopping_patience", default=10, unit="epochs", minimum=1)
    seed: int = _seed()

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class InferConfig:
    """Reconstruction of the test groups (infer stage)."""

    batch_size: int = option("Groups per prediction batch (memory only: the result does not depend on it).",
                             key="infer.batch_size", default=64, minimum=1)
    model_from: str | None = option("null: reconstruct with this scenario's own trained model; a scenario name: with "
                                    "the model that scenario trains (same N, gridsize and probe; no training runs for "
                                    "this one).", key="infer.model_from", default=None)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class StitchConfig:
    """Stitching the reconstructed patches into the test region (stitch stage)."""

    weight: str = option("Overlap weight per patch pixel: probe_intensity (|P|²/max|P|²) or uniform (1).",
                         key="stitch.weight", default="probe_intensity", choices=("probe_intensity", "uniform"))
    resolve_twin: bool = option("Gridsize 1 with a probe that is its own twin: swap each patch for its twin "
                                "conj(O(-r)) where that agrees better with its neighbours.", key="stitch.resolve_twin",
                                default=False)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class CompareConfig:
    """Scoring the stitched object (compare stage, ptychopipe.evaluation)."""

    coverage_threshold: float = option("Score the pixels whose coverage (sum of stitch weights) is at least this × its "
                                       "median.", key="compare.coverage_threshold", default=0.5, minimum=0)
    frc_threshold: str = option('FRC threshold curve: half_bit, or "0.5" (a string: the fixed 0.5 threshold).',
                                key="compare.frc_threshold", default="half_bit", choices=("half_bit", "0.5"))
    ratio_tolerance: float = option("Stage-ratio chain: a link is broken when ratio/contract is off 1 by more than "
                                    "this.", key="compare.ratio_tolerance", default=0.05, exclusive_minimum=0)
    register: bool = option("Sub-pixel registration (phase cross-correlation) before scoring; off: only a global "
                            "phase is removed.", key="compare.register", default=False)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class IngestConfig:
    """Import of measured data (``source:``) in place of the simulate stage (docs/real_data.md).

    Only the fields that define this format are set (the others are None), so editing an
    unused one re-runs nothing."""

    file: str | None = option("null: simulate; else the .npz or ptychodus product .h5 to ingest (the simulate stage is "
                              "skipped).", key="source.file", default=None)
    format: str = option("npz (xcoords, ycoords, diff3d, probeGuess[, objectGuess]) or ptychodus (product + "
                         "diffraction file).", key="source.format", default="npz", choices=FORMATS)
    probe_normalization: str = option("FFT convention of the probe in the file: native (npz: unitary, ptychodus: "
                                      "unnormalized), unitary or unnormalized.", key="source.probe_normalization",
                                      default="native", choices=("native", "unitary", "unnormalized"))
    diff3d: str | None = option("npz: what diff3d holds, amplitude = sqrt(counts) or counts.", key="source.diff3d",
                                default="amplitude", choices=("amplitude", "counts"),
                                when=_param_is("source.format", "npz"))
    diffraction: str | None = option("ptychodus: the diffraction file (null: diffraction.h5 beside the product).",
                                     key="source.diffraction", default=None,
                                     when=_param_is("source.format", "ptychodus"))
    N: int | None = _pattern_size(default=None, when=is_imported)  # None: not checked (a simulated scenario)
    check_conventions: bool = option("Stop the import when the data contradict the declared conventions (patterns "
                                     "not fftshifted or transposed, x and y swapped, counts vs amplitudes); false: "
                                     "import anyway, with a warning in the log.", key="source.check_conventions",
                                     default=True)

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class BaselineConfig:
    """Iterative reference reconstruction with pty-chi (``baseline:``; ``enabled`` only decides
    whether the rule runs, so it is not part of the stage config)."""

    engine: str = option("lsqml (its noise model: noise_model) or rpie (alpha 0.1, step 1.0).", key="baseline.engine",
                         default="lsqml", choices=("lsqml", "rpie"))
    epochs: int = option("Iterative epochs (passes over the test patterns).", key="baseline.epochs", default=100,
                         minimum=1)
    batch_size: int = option("Diffraction patterns per update (rpie: <= 4).", key="baseline.batch_size", default=4,
                             minimum=1)
    snapshots: int = option("Object snapshots along the run (quality against time); the last is the final epoch.",
                            key="baseline.snapshots", default=10, minimum=1)
    seed: int = option("pty-chi random seed (batch order).", key="baseline.seed", default=7, minimum=0)
    noise_model: str = option("lsqml's noise model (rpie: gaussian).", key="baseline.noise_model", default="gaussian",
                              choices=("gaussian", "poisson"))
    initial: str = option("pty-chi's starting object: flat (the constant amplitude estimate) or reconstruction (the "
                          "network's stitched test object).", key="baseline.initial", default="flat",
                          choices=("flat", "reconstruction"))

    def __post_init__(self) -> None:
        check_options(self)


def stage_config(params: Mapping[str, Any], stage: str):
    """Build the frozen config of ``stage`` from one scenario's merged ``params``."""
    p = params
    if stage == "train":
        # each estimate algorithm's own options class, so editing another's knob re-runs nothing
        estimate = estimate_options(p["model"])
        unet = options_from_params(UNetOptions, p) if estimate.corrected else None
        return options_from_params(TrainConfig, p,
                                   model=options_from_params(ModelConfig, p, estimate=estimate, unet=unet))
    if stage == "baseline":
        cfg = options_from_params(BaselineConfig, p)
        # rpie has no noise model: always "gaussian", so editing noise_model re-runs nothing
        return cfg if cfg.engine == "lsqml" else dataclasses.replace(cfg, noise_model="gaussian")
    from .stages import stage as registered

    # every other stage: its options class read field by field from the params (option keys, nested
    # options classes, each option's when and derive); an unknown stage is one line naming the known ones
    return options_from_params(registered(stage).options, p)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON dict of a stage config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_json(cfg: Any) -> str:
    """Canonical JSON of a stage config: sorted keys, no whitespace (stable for hashing)."""
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True, separators=(",", ":"))


def config_hash(cfg: Any) -> str:
    """First 16 hex digits of the SHA-256 of :func:`to_json`."""
    return hashlib.sha256(to_json(cfg).encode()).hexdigest()[:16]


def _finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _build(cls: Any, data: Any, where: str) -> Any:
    """Instance of ``cls`` (a stage config dataclass or one of its field types) from JSON
    ``data``, checking keys and value types; ``where`` names the value in errors. Integers
    are accepted for float fields and stored as floats (as :func:`stage_config` does, so
    the canonical JSON and its hash do not depend on how a number was written)."""
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) != names:
            raise ConfigError(f"{where}: expected keys {sorted(names)}, got {sorted(data)}")
        return cls(**{k: _build(hints[k], data[k], f"{where}.{k}") for k in names})
    args = typing.get_args(cls)
    if typing.get_origin(cls) in (typing.Union, types.UnionType):  # X | None, or options classes by "algorithm"
        if data is None and type(None) in args:
            return None
        choices = [a for a in args if a is not type(None)]
        if len(choices) > 1:
            by_name = {a.algorithm: a for a in choices}  # the options classes' own default
            got = data.get("algorithm") if isinstance(data, dict) else None
            if got not in by_name:
                raise ConfigError(f"{where}.algorithm: expected one of {sorted(by_name)}, got {json.dumps(got)}")
            choices = [by_name[got]]
        return _build(choices[0], data, where)
    if typing.get_origin(cls) is tuple:
        if not isinstance(data, (list, tuple)) or len(data) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {json.dumps(data)}")
        return tuple(_build(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    checks = {bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: _finite_number}
    if cls not in checks:  # a programming error: a config field of a type this reader does not know
        raise TypeError(f"{where}: config field type {cls!r} is not supported by from_json")
    if not checks[cls](data):
        what = "a finite float" if cls is float else cls.__name__
        raise ConfigError(f"{where}: expected {what}, got {json.dumps(data)[:80]}")
    return float(data) if cls is float else data


def from_json(stage: str, text: str):
    """Rebuild a stage's frozen config from :func:`to_json` output (what a rule passes)."""
    from .stages import stage as registered

    options = registered(stage).options
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"stage config for {stage}: not valid JSON ({exc.msg} at char {exc.pos})") from None
    return _build(options, data, f"stage config for {stage}")


# --------------------------------------------------------------------------- loading and validation


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """The JSON schema of config/scenarios.yaml (workflow/schemas/config.schema.yaml), as a dict."""
    with open(path) as fh:
        return yaml.safe_load(fh)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a mapping that repeats a key is an error (PyYAML keeps the last
    value silently: a second scenario of the same name would replace the first)."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:  # the keys written in this mapping (merge keys, <<:, may be overridden)
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: let the constructor report it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {first})", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml_text(text: str, source: str) -> Any:
    """Parse YAML ``text`` (read from ``source``) strictly: a syntax error or a repeated key is a
    one-line ConfigError naming ``source``, the line and the problem."""
    loader = _StrictLoader(text)  # a SafeLoader: plain data only, no Python objects
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(f"{source}: not valid YAML{where}" + (f": {problem}" if problem else "")) from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read the YAML config file; a missing file, a YAML syntax error or a repeated key is one
    clear line (with the line number)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected the YAML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    data = parse_yaml_text(path.read_text(), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def _error_line(source: str, err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    hint = ""
    if err.validator == "type" and isinstance(err.instance, str):
        try:
            float(err.instance)
            hint = " (YAML 1.1 reads a number like 1e9 as text: write 1.0e+9)"
        except ValueError:
            pass
    return f"{source}: {path}: {err.message}{hint}"


def _check(instance: Any, schema: dict[str, Any], source: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    err = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if err is not None:
        raise ConfigError(_error_line(source, err))


def _all_required(schema: Any) -> Any:
    """Copy of a schema in which every object lists all its properties as required."""
    if isinstance(schema, dict):
        out = {k: _all_required(v) for k, v in schema.items()}
        if "properties" in schema:
            out["required"] = sorted(schema["properties"])
        return out
    if isinstance(schema, list):
        return [_all_required(v) for v in schema]
    return schema


def validate_raw(raw: Mapping[str, Any], source: str = "config", schema: dict | None = None) -> None:
    """Validate the config file's structure against the JSON schema, then refuse non-finite
    numbers (one-line ConfigError naming the key)."""
    schema = schema or load_schema()
    _check(raw, schema, source)
    _check_finite(raw, source)


def _check_finite(node: Any, source: str, path: str = "") -> None:
    """JSON Schema's ``number`` admits YAML's .inf and .nan, and NaN passes every minimum
    (comparisons with NaN are false): refuse them here, with the key's dotted path."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            _check_finite(v, source, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_finite(v, source, f"{path}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{source}: {path or '<top level>'}: expected a finite number, got {node}")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: dicts merge key by key, everything else (lists too) is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    keys = dotted.split(".")
    node: dict[str, Any] = {}
    root = node
    for k in keys[:-1]:
        node[k] = {}
        node = node[k]
    node[keys[-1]] = value
    return deep_merge(d, root)


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}".replace("+", "").replace(".", "p")
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(value))


def expand_sweeps(raw: Mapping[str, Any], source: str = "config") -> dict[str, dict[str, Any]]:
    """Scenario overrides, with each ``sweeps`` entry expanded to one scenario per value.

    ``sweeps: {dose: {base: gs2_custom, param: nphotons, values: [1e4, 1e9]}}`` adds
    scenarios ``dose_10000`` and ``dose_1e09`` (labels: ``labels`` if given, else each value
    written with ``%g``, ``+`` dropped and ``.`` -> ``p``): the base scenario's overrides with
    ``param`` set to each value.
    """
    scenarios = {k: dict(v or {}) for k, v in raw["scenarios"].items()}
    for name, members in sweep_members(raw, source).items():
        sweep = raw["sweeps"][name]
        for scen, value in members:
            if scen in scenarios:
                raise ConfigError(f"{source}: sweeps.{name}: generated scenario {scen!r} already exists")
            scenarios[scen] = deep_merge(_set_dotted(scenarios[sweep["base"]], sweep["param"], value),
                                         sweep.get("common") or {})
    return scenarios


def sweep_members(raw: Mapping[str, Any], source: str = "config") -> dict[str, list[tuple[str, Any]]]:
    """{sweep name: [(generated scenario name, value), ...]} in the order of ``values``."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for name, sweep in (raw.get("sweeps") or {}).items():
        base = sweep["base"]
        if base not in raw["scenarios"]:
            raise ConfigError(f"{source}: sweeps.{name}.base: scenario {base!r} not found; "
                              f"expected one of {sorted(raw['scenarios'])}")
        labels = sweep.get("labels") or [_label(v) for v in sweep["values"]]
        if len(labels) != len(sweep["values"]):
            raise ConfigError(f"{source}: sweeps.{name}.labels: expected {len(sweep['values'])} labels "
                              f"(one per value), got {len(labels)}")
        out[name] = [(f"{name}_{label}", value) for value, label in zip(sweep["values"], labels)]
    return out


def swept_scenarios(raw: Mapping[str, Any], param: str | None = None) -> list[tuple[str, Any]]:
    """(scenario, value) of every sweep-generated scenario, in the order of the sweeps and
    their ``values`` (only sweeps over ``param`` when given, e.g. ``"nphotons"``)."""
    return [m for name, members in sweep_members(raw).items()
            if param is None or raw["sweeps"][name]["param"] == param for m in members]


def sweep_duplicates(raw: Mapping[str, Any], params: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{sweep scenario: its base scenario} for every sweep-generated scenario whose merged
    parameters equal its base's, because the base already has that value (the shipped
    ``dose_1e09`` and ``gs2_custom``, both at nphotons 1e9).

    ``params`` is :func:`resolve_scenarios`' output; a pair counts only when both are in it
    (selected by ``run:``). Such a point is built once, as the base scenario
    (:func:`default_scenarios`, :func:`sweep_points`).
    """
    out: dict[str, str] = {}
    for name, members in sweep_members(raw).items():
        base = raw["sweeps"][name]["base"]
        for scen, _ in members:
            if scen in params and base in params and params[scen] == params[base]:
                out[scen] = base
    return out


def sweep_points(raw: Mapping[str, Any], params: Mapping[str, Mapping[str, Any]],
                 param: str | None = None) -> list[tuple[str, Any]]:
    """(scenario to build, value) of every selected sweep point (:func:`swept_scenarios` less
    those ``run:`` leaves out), a point equal to its base replaced by the base, each scenario
    once: the shipped dose sweep gives dose_10000 ... dose_1e07 and then gs2_custom (1e9)."""
    same_as = sweep_duplicates(raw, params)
    out: dict[str, Any] = {}
    for scen, value in swept_scenarios(raw, param):
        if scen in params:
            out.setdefault(same_as.get(scen, scen), value)
    return list(out.items())


def default_scenarios(raw: Mapping[str, Any], params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The scenarios the default target (``rule all``, ``make demo``) builds, sorted: every
    one of ``params`` (:func:`resolve_scenarios`' output) when ``run:`` names some, else those
    not generated by a sweep (sweeps are built by their own targets, e.g. ``snakemake
    dose_response``); a sweep point equal to its selected base is left to the base."""
    same_as = sweep_duplicates(raw, params)
    if raw.get("run"):
        return sorted(s for s in params if s not in same_as)
    swept = {s for s, _ in swept_scenarios(raw)}
    return sorted(s for s in params if s not in swept)


def _semantic_checks(name: str, p: Mapping[str, Any], source: str) -> None:
    where = f"{source}: scenario {name}"
    c = int(p["gridsize"]) ** 2
    k = int(p["group"]["neighbour_count"])
    if k < c:
        raise ConfigError(f"{where}: group.neighbour_count: expected >= gridsize^2 = {c}, got {k}")
    if p["probe"]["kind"] == "custom" and not p["probe"]["file"]:
        raise ConfigError(f"{where}: probe.file: expected a file path for probe.kind=custom, got null")
    for key in ("amplitude_range", "phase_range", "line_length_px", "blob_sigma_px"):
        lo, hi = p["object"][key]
        if not lo < hi:
            raise ConfigError(f"{where}: object.{key}: expected min < max, got [{lo}, {hi}]")
    lo, _ = p["object"]["amplitude_range"]
    if lo < 0:
        raise ConfigError(f"{where}: object.amplitude_range: expected min >= 0, got {lo}")
    need = int(p["N"]) + 2 * float(p["scan"]["buffer_px"]) + 1
    if p["object"]["size"] < need:
        raise ConfigError(f"{where}: object.size: expected >= N + 2*scan.buffer_px + 1 = {need:g}, "
                          f"got {p['object']['size']}")
    if p["probe"]["kind"] == "ideal" and not ideal_footprint_px(p) < int(p["N"]):
        raise ConfigError(f"{where}: probe.footprint_px: expected < N = {p['N']} (the central lobe inside the "
                          f"window; a wider one lights it flat), got {p['probe']['footprint_px']}")
    try:
        estimate_options(p["model"])  # bounds the schema cannot state (one algorithm's own)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if p["stitch"]["resolve_twin"] and int(p["gridsize"]) != 1:
        raise ConfigError(f"{where}: stitch.resolve_twin: expected gridsize 1 (one pattern per patch; a group's "
                          f"patches share one twin), got gridsize {p['gridsize']}")
    if p["train"]["min_learning_rate"] > p["train"]["learning_rate"]:
        raise ConfigError(f"{where}: train.min_learning_rate: expected <= train.learning_rate "
                          f"= {p['train']['learning_rate']}, got {p['train']['min_learning_rate']}")


def _check_sweep_params(raw: Mapping[str, Any], schema: Mapping[str, Any], source: str) -> None:
    """Each sweep's ``param`` must be the dotted name of a parameter (a leaf of the schema's
    ``params``): one line naming ``sweeps.NAME.param`` otherwise."""
    for name, sweep in (raw.get("sweeps") or {}).items():
        node: Any = schema["$defs"]["params"]
        for key in sweep["param"].split("."):
            node = (node.get("properties") or {}).get(key) if isinstance(node, Mapping) else None
        if node is None:
            raise ConfigError(f"{source}: sweeps.{name}.param: {sweep['param']!r} is not a parameter; expected "
                              "the dotted name of one (e.g. nphotons, train.epochs) or of a group (e.g. model)")
        if "properties" in node and not all(isinstance(v, Mapping) for v in sweep["values"]):
            raise ConfigError(f"{source}: sweeps.{name}.values: {sweep['param']!r} is a group of parameters; "
                              "expected each value to be a mapping of its keys (e.g. {estimate_iterations: 200})")


def resolve_scenarios(raw: Mapping[str, Any], preset: str | None = None,
                      source: str = "config") -> dict[str, dict[str, Any]]:
    """Validate ``raw`` and return {scenario name: fully merged parameters}.

    Merge order: ``defaults`` <- ``presets[preset]`` <- scenario overrides. ``preset``
    defaults to ``raw["preset"]``, else "quick". Only the scenarios named in ``raw["run"]`` are
    returned when that list is non-empty. Raises ConfigError (one line) on any problem.
    """
    schema = load_schema()
    validate_raw(raw, source, schema)
    _check_sweep_params(raw, schema, source)
    preset = effective_preset(raw, preset)
    if preset not in raw["presets"]:
        raise ConfigError(f"{source}: preset: {preset!r} is not defined; expected one of {sorted(raw['presets'])}")
    scenarios = expand_sweeps(raw, source)
    strict = _all_required(schema["$defs"]["params"])
    strict = {**strict, "$defs": schema["$defs"]}
    base = deep_merge(raw["defaults"], raw["presets"][preset] or {})
    out: dict[str, dict[str, Any]] = {}
    for name, override in scenarios.items():
        if not SCENARIO_NAME.match(name):
            raise ConfigError(f"{source}: scenarios.{name}: expected a name that starts with a letter or digit "
                              "and holds only letters, digits, _ and -")
        merged = deep_merge(base, override)
        _check(merged, strict, f"{source}: scenario {name} (after merging defaults, preset {preset})")
        _semantic_checks(name, merged, source)
        out[name] = merged
    _check_model_from(out, source)
    run = list(raw.get("run") or [])
    unknown = [r for r in run if r not in out]
    if unknown:
        raise ConfigError(f"{source}: run: unknown scenario(s) {unknown}; expected names from {sorted(out)}")
    # a scenario reconstructed with another's model needs that one's model (and its scenario)
    keep = set(run) | {out[r]["infer"]["model_from"] for r in run if out[r]["infer"]["model_from"]}
    return {k: v for k, v in out.items() if not run or k in keep}


#: What a model carries of the data it was trained on, so it may only reconstruct scenarios
#: that agree on them (the probe's absolute scale and ā may differ: infer rescales).
MODEL_DATA_KEYS = ("N", "gridsize", "probe")


def _check_model_from(scenarios: Mapping[str, Mapping[str, Any]], source: str) -> None:
    """``infer.model_from`` names another scenario that trains its own model, with the same
    N, gridsize and probe (:data:`MODEL_DATA_KEYS`): one line naming the key otherwise."""
    for name, p in scenarios.items():
        other = p["infer"]["model_from"]
        if other is None:
            continue
        where = f"{source}: scenario {name}: infer.model_from"
        if other == name or other not in scenarios:
            raise ConfigError(f"{where}: expected another scenario's name, got {other!r}")
        if scenarios[other]["infer"]["model_from"] is not None:
            raise ConfigError(f"{where}: {other!r} is itself reconstructed with another model; expected a scenario "
                              "that trains its own")
        for key in MODEL_DATA_KEYS:
            mine, theirs = (_probe_identity(q) if key == "probe" else q[key] for q in (p, scenarios[other]))
            if mine != theirs:
                raise ConfigError(f"{where}: {key} differs from scenario {other}'s ({json.dumps(mine)} vs "
                                  f"{json.dumps(theirs)}); expected the data the model was trained for")


def _probe_identity(p: Mapping[str, Any]) -> list[Any]:
    """What defines a scenario's probe: [kind, footprint] (ideal) or [kind, file, key] (custom)."""
    pr = p["probe"]
    return ["ideal", ideal_footprint_px(p)] if pr["kind"] == "ideal" else ["custom", pr["file"], pr["key"]]


def command_line_source(overrides: Mapping[str, Any]) -> str:
    """How errors name values given on Snakemake's command line (``--config KEY=VALUE ...``)."""
    shown = " ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in overrides.items())
    return f"command line --config {shown}"


def resolve_with_overrides(file_raw: Mapping[str, Any], merged: Mapping[str, Any], overrides: Mapping[str, Any],
                           source: str) -> dict[str, dict[str, Any]]:
    """:func:`resolve_scenarios` of ``merged`` (the config file(s) ``file_raw`` updated with the
    command line's ``overrides``), attributing each error to where the value came from: the
    file's own content is validated first (errors name ``source``); an error that only the
    overrides bring in names the command line, not the file."""
    if not overrides:
        return resolve_scenarios(merged, merged.get("preset"), source=source)
    preset = merged.get("preset")  # the file checked with the preset of the run, where the file defines it
    if not (isinstance(file_raw.get("presets"), Mapping) and isinstance(preset, str) and preset in file_raw["presets"]):
        preset = file_raw.get("preset")
    resolve_scenarios(file_raw, preset, source=source)
    return resolve_scenarios(merged, merged.get("preset"), source=command_line_source(overrides))


def effective_preset(raw: Mapping[str, Any], preset: str | None = None) -> str:
    """The preset :func:`resolve_scenarios` merges: ``preset`` if given, else the file's ``preset``,
    else "quick"."""
    return preset if preset is not None else str(raw.get("preset", "quick"))


def scenarios_hash(params: Mapping[str, Mapping[str, Any]]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of {scenario: merged parameters}:
    one number for the configuration of a whole run (recorded in the summary)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_scenarios(path: str | Path, preset: str | None = None) -> dict[str, dict[str, Any]]:
    """:func:`load_yaml` + :func:`resolve_scenarios` for a config file path."""
    return resolve_scenarios(load_yaml(path), preset, source=str(path))


# --------------------------------------------------------------------------- params-diff


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def params_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """Stage-by-stage differences of the effective configs of two scenarios.

    Returns rows (stage, dotted key, value in a, value in b), in pipeline order.
    """
    from .stages import STAGES

    rows = []
    for stage in STAGES:
        fa = _flatten(to_dict(stage_config(a, stage)))
        fb = _flatten(to_dict(stage_config(b, stage)))
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                rows.append((stage, key, fa.get(key), fb.get(key)))
    return rows
