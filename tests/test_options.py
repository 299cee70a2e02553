"""Typed options against the schema and the shipped defaults, field by field: each options
field declares its default, bounds, unit and description once (config.option); the schema
property it is read from states the same, and config/scenarios.yaml's `defaults:` hold the
same default. A field changed in one place and not the other fails here. A field with a
``when`` (it applies to some params only, else None) has that default where ``defaults:`` make
it apply; a derived field is checked against the key it is derived from."""

from __future__ import annotations

import dataclasses
import pytest
import yaml

from ptychopipe.config import (ESTIMATE_OPTIONS, SCHEMA_PATH, BaselineConfig, CompareConfig, ConfigError,
                               DifferenceMapOptions, GradientOptions, GroupConfig, InferConfig, IngestConfig,
                               LossConfig, ModelConfig, NormalizeConfig, ObjectConfig, ProbeConfig, SimulateConfig,
                               SplitConfig, StitchConfig, TrainConfig, UNetOptions, UnrolledOptions, check_options,
                               config_hash, deep_merge, estimate_options, from_json, load_schema, options_from_params,
                               stage_config, to_json)
from ptychopipe.stages import STAGES

from pipeline_helpers import CONFIG_FILE, ci_params

OPTION_CLASSES = (ObjectConfig, ProbeConfig, SimulateConfig, IngestConfig, SplitConfig, GroupConfig, NormalizeConfig,
                  DifferenceMapOptions, GradientOptions, UnrolledOptions, UNetOptions, ModelConfig, LossConfig,
                  TrainConfig, InferConfig, StitchConfig, CompareConfig, BaselineConfig)
# a class's discriminator and nested options: no key of their own
NESTED = {"algorithm", "model", "loss", "estimate", "unet", "object", "probe"}
SCHEMA_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "tuple[float, float]": "array"}
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _fields():
    return [(cls, f) for cls in OPTION_CLASSES for f in dataclasses.fields(cls) if f.metadata]


def _schema_property(key: str) -> dict:
    schema = load_schema(SCHEMA_PATH)
    node = schema["$defs"]["params"]
    for part in key.split("."):
        node = node["properties"][part]
    if "$ref" in node:  # a shared definition: the [min, max] range
        node = {**schema["$defs"][node["$ref"].split("/")[-1]], **node}
    return node


def _defaults() -> dict:
    return yaml.safe_load((CONFIG_FILE).read_text())["defaults"]


def _default(key: str):
    node = _defaults()
    for part in key.split("."):
        node = node[part]
    return node


def test_every_option_field_is_declared_with_a_key_and_a_description():
    for cls in OPTION_CLASSES:
        for f in dataclasses.fields(cls):
            assert f.name in NESTED or (f.metadata.get("key") and f.metadata.get("description")), (cls, f.name)


@pytest.mark.parametrize("cls,field", _fields(), ids=lambda x: getattr(x, "__name__", getattr(x, "name", "")))
def test_option_agrees_with_the_schema_and_the_shipped_default(cls, field):
    key = field.metadata["key"]
    prop = _schema_property(key)
    assert prop["description"] == field.metadata["description"], key
    assert prop.get("units", "") == field.metadata["unit"], key
    assert {b: prop[b] for b in BOUNDS if b in prop} == field.metadata["bounds"], key
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    base, optional = field.type.removesuffix(" | None"), field.type.endswith(" | None")
    assert types in ([SCHEMA_TYPES[base]], [SCHEMA_TYPES[base], "null"]), key
    assert optional == ("null" in types or field.metadata["when"] is not None), key  # None where it does not apply
    if base.startswith("tuple"):
        assert (prop["items"], prop["minItems"], prop["maxItems"]) == ({"type": "number"}, 2, 2), key
    assert prop.get("enum") == (list(field.metadata["choices"]) if field.metadata["choices"] else None), key
    when, derive = field.metadata["when"], field.metadata["derive"]
    if when is not None and not when(_defaults()):
        assert field.default is None, key
    elif derive is not None:  # computed from the params: the schema describes the key it is derived from
        assert field.default == derive(_defaults()), key
    else:
        assert (list(field.default) if isinstance(field.default, tuple) else field.default) == _default(key), key


def test_the_algorithm_names_are_the_schema_enum():
    enum = _schema_property("model.estimate_algorithm")["enum"]
    assert sorted(enum) == sorted(ESTIMATE_OPTIONS)
    assert all(cls.algorithm == name for name, cls in ESTIMATE_OPTIONS.items())


@pytest.mark.parametrize("build,message", [
    (lambda: DifferenceMapOptions(iterations=0), r"model\.estimate_iterations: expected >= 1, got 0"),
    (lambda: GradientOptions(momentum=1.0), r"model\.estimate_momentum: expected < 1, got 1\.0"),
    (lambda: UnrolledOptions(iterations=11), r"model\.estimate_iterations: expected <= 10 for estimate_algorithm "
                                             r"unrolled .* got 11"),
    (lambda: UnrolledOptions(prior_filters=65), r"model\.prior_filters: expected <= 64, got 65"),
    (lambda: UNetOptions(phase_max_rad=0.0), r"model\.phase_max_rad: expected > 0, got 0\.0"),
    (lambda: DifferenceMapOptions(noise_tolerance=-0.5), r"model\.estimate_noise_tolerance: expected >= 0"),
])
def test_options_check_their_bounds_in_one_line(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_estimate_options_read_only_their_algorithms_keys():
    m = {"estimate_algorithm": "gradient", "estimate_iterations": 7, "estimate_momentum": 0.5,
         "estimate_noise_tolerance": 2.0, "prior_filters": 3, "filters": 8, "depth": 3, "phase_max_rad": 1.0}
    assert estimate_options(m) == GradientOptions(7, 0.5)
    assert estimate_options({**m, "estimate_algorithm": "difference_map"}) == DifferenceMapOptions(7, 2.0)
    assert estimate_options({**m, "estimate_algorithm": "unrolled"}) == UnrolledOptions(7, 2.0, 3)
    assert isinstance(estimate_options(m).iterations, int) and isinstance(estimate_options(m).momentum, float)
    check_options(UNetOptions())


def test_stage_options_are_built_from_the_params_by_their_keys():
    from pipeline_helpers import ci_params

    p = ci_params("gs2_custom")
    cfg = stage_config(p, "train")
    assert (cfg.batch_size, cfg.epochs, cfg.seed) == (p["train"]["batch_size"], p["train"]["epochs"], p["seed"])
    assert isinstance(cfg.learning_rate, float) and cfg.loss == LossConfig(**p["train"]["loss"])
    assert stage_config(p, "stitch") == StitchConfig(**p["stitch"])
    assert stage_config(p, "compare") == CompareConfig(**p["compare"])
    rpie = {**p, "baseline": {**p["baseline"], "engine": "rpie", "noise_model": "poisson"}}
    assert stage_config(rpie, "baseline").noise_model == "gaussian"  # rpie has none: editing it re-runs nothing
    assert options_from_params(InferConfig, {"infer": {"batch_size": 8, "model_from": None}}) == InferConfig(8, None)


@pytest.mark.parametrize("build,message", [
    (lambda: StitchConfig(weight="gaussian"), r"stitch\.weight: expected one of \['probe_intensity', 'uniform'\], "
                                              r"got 'gaussian'"),
    (lambda: TrainConfig(None, LossConfig(), learning_rate=0.0), r"train\.learning_rate: expected > 0, got 0\.0"),
    (lambda: BaselineConfig(initial="warm"), r"baseline\.initial: expected one of"),
])
def test_stage_options_check_their_bounds_and_choices(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "train"])  # train's model depends on the algorithm
def test_an_options_class_defaults_to_the_config_of_the_shipped_defaults(stage):
    assert stage_config(_defaults(), stage) == STAGES[stage].options()


def test_derived_fields_follow_the_keys_they_are_derived_from():
    p = ci_params("gs2_ideal")  # gridsize 2, probe.footprint_px null
    sim = stage_config(p, "simulate")
    assert sim.n_positions == p["scan"]["n_images"] * 4 and isinstance(sim.n_positions, int)
    assert sim.probe.footprint_px == 32.0 and stage_config({**p, "N": 32}, "simulate").probe.footprint_px == 16.0
    assert stage_config(p, "ingest").N is None  # a simulated scenario: nothing to check
    assert stage_config(deep_merge(p, {"source": {"file": "d.npz"}}), "ingest").N == 64


CUSTOM = {"probe": {"kind": "custom", "file": "probe.npz"}}
PTYCHODUS = {"source": {"file": "p.h5", "format": "ptychodus"}}
NPZ = {"source": {"file": "d.npz", "format": "npz"}}


@pytest.mark.parametrize("stage,setting,edit,applies", [
    ("simulate", {}, {"object": {"n_blobs": 3, "blob_sigma_px": [1.0, 2.0]}}, False),
    ("simulate", {"object": {"kind": "blobs"}}, {"object": {"n_blobs": 3}}, True),
    ("simulate", {"object": {"kind": "blobs"}}, {"object": {"blob_sigma_px": [1.0, 2.0]}}, True),
    ("simulate", {"object": {"kind": "blobs"}}, {"object": {"n_lines": 3, "line_length_px": [1.0, 2.0],
                                                            "blur_sigma_px": 5.0}}, False),
    ("simulate", {}, {"object": {"n_lines": 3}}, True),
    ("simulate", {}, {"object": {"line_length_px": [1.0, 2.0]}}, True),
    ("simulate", {}, {"object": {"blur_sigma_px": 5.0}}, True),
    ("simulate", {}, {"probe": {"file": "other.npz", "key": "other"}}, False),
    ("simulate", {}, {"probe": {"footprint_px": 32}}, False),  # null = N/2 = 32
    ("simulate", {}, {"probe": {"footprint_px": 12}}, True),
    ("simulate", CUSTOM, {"probe": {"footprint_px": 12}}, False),
    ("simulate", CUSTOM, {"probe": {"file": "other.npz"}}, True),
    ("simulate", CUSTOM, {"probe": {"key": "other"}}, True),
    ("simulate", {}, {"scan": {"n_images": 7}}, True),
    ("ingest", NPZ, {"source": {"diffraction": "other.h5"}}, False),
    ("ingest", NPZ, {"source": {"diff3d": "counts"}}, True),
    ("ingest", PTYCHODUS, {"source": {"diff3d": "counts"}}, False),
    ("ingest", PTYCHODUS, {"source": {"diffraction": "other.h5"}}, True),
    ("ingest", {}, {"N": 128}, False),
    ("ingest", NPZ, {"N": 128}, True),
])
def test_only_a_parameter_that_applies_changes_the_config_hash(stage, setting, edit, applies):
    """A parameter of another object kind, probe kind or file format is None in the config, so
    editing it re-runs nothing; where it applies, editing it re-runs the stage."""
    p = deep_merge(ci_params("gs2_ideal"), setting)
    changed = config_hash(stage_config(deep_merge(p, edit), stage)) != config_hash(stage_config(p, stage))
    assert changed == applies


@pytest.mark.parametrize("setting", [{}, {"object": {"kind": "blobs"}}, CUSTOM, NPZ, PTYCHODUS,
                                     deep_merge(PTYCHODUS, {"source": {"diffraction": "d.h5"}})])
def test_simulate_and_ingest_configs_round_trip_through_json(setting):
    p = deep_merge(ci_params("gs2_ideal"), setting)
    for stage in ("simulate", "ingest"):
        cfg = stage_config(p, stage)
        assert from_json(stage, to_json(cfg)) == cfg and to_json(from_json(stage, to_json(cfg))) == to_json(cfg)


@pytest.mark.parametrize("build,message", [
    (lambda: ObjectConfig(size=16), r"object\.size: expected >= 32, got 16"),
    (lambda: ObjectConfig(kind="dots"), r"object\.kind: expected one of \['lines', 'blobs'\], got 'dots'"),
    (lambda: ObjectConfig(blur_sigma_px=-1.0), r"object\.blur_sigma_px: expected >= 0, got -1\.0"),
    (lambda: ObjectConfig(kind="blobs", n_blobs=0, blob_sigma_px=(1.0, 2.0)), r"object\.n_blobs: expected >= 1, got 0"),
    (lambda: ProbeConfig(footprint_px=0.0), r"probe\.footprint_px: expected > 0, got 0\.0"),
    (lambda: SimulateConfig(N=48), r"N: expected one of \[32, 64, 128, 256\], got 48"),
    (lambda: SimulateConfig(n_positions=0), r"scan\.n_images: expected >= 1, got 0"),
    (lambda: SimulateConfig(nphotons=0.0), r"nphotons: expected > 0, got 0\.0"),
    (lambda: IngestConfig(format="h5"), r"source\.format: expected one of \['npz', 'ptychodus'\], got 'h5'"),
    (lambda: IngestConfig(diff3d="intensity"), r"source\.diff3d: expected one of \['amplitude', 'counts'\]"),
    (lambda: IngestConfig(file="d.npz", N=48), r"N: expected one of \[32, 64, 128, 256\], got 48"),
    (lambda: stage_config(deep_merge(ci_params("gs2_ideal"), {"object": {"kind": "blobs", "n_blobs": 0}}), "simulate"),
     r"object\.n_blobs: expected >= 1, got 0"),
])
def test_simulate_and_ingest_options_check_their_bounds_in_one_line(build, message):
    with pytest.raises(ConfigError, match=f"^{message}") as err:
        build()
    assert "\n" not in str(err.value)


def test_a_field_that_does_not_apply_is_not_checked():
    p = deep_merge(ci_params("gs2_ideal"), {"object": {"n_blobs": 0}, "source": {"format": "ptychodus",
                                                                               "diff3d": "intensity"}})
    assert stage_config(p, "simulate").object.n_blobs is None and stage_config(p, "ingest").diff3d is None
