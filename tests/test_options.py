"""Typed options against the schema and the shipped defaults, field by field: each options
field declares its default, bounds, unit and description once (config.option); the schema
property it is read from states the same, and config/scenarios.yaml's `defaults:` hold the
same default. A field changed in one place and not the other fails here."""

from __future__ import annotations

import dataclasses
import pytest
import yaml

from ptychopipe.config import (ESTIMATE_OPTIONS, SCHEMA_PATH, BaselineConfig, CompareConfig, ConfigError,
                               DifferenceMapOptions, GradientOptions, GroupConfig, InferConfig, LossConfig, ModelConfig,
                               NormalizeConfig, SplitConfig, StitchConfig, TrainConfig,
                               UNetOptions, UnrolledOptions, check_options, estimate_options, load_schema,
                               options_from_params, stage_config)

from pipeline_helpers import CONFIG_FILE

OPTION_CLASSES = (SplitConfig, GroupConfig, NormalizeConfig, DifferenceMapOptions, GradientOptions, UnrolledOptions,
                  UNetOptions, ModelConfig, LossConfig, TrainConfig, InferConfig, StitchConfig, CompareConfig,
                  BaselineConfig)
NESTED = {"algorithm", "model", "loss", "estimate", "unet"}  # a class's discriminator and nested options: no key of their own
SCHEMA_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "str | None": ["string", "null"]}
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _fields():
    return [(cls, f) for cls in OPTION_CLASSES for f in dataclasses.fields(cls) if f.metadata]


def _schema_property(key: str) -> dict:
    node = load_schema(SCHEMA_PATH)["$defs"]["params"]
    for part in key.split("."):
        node = node["properties"][part]
    return node


def _default(key: str):
    node = yaml.safe_load((CONFIG_FILE).read_text())["defaults"]
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
    assert prop["type"] == SCHEMA_TYPES[field.type], key
    assert prop.get("enum") == (list(field.metadata["choices"]) if field.metadata["choices"] else None), key
    assert _default(key) == field.default, key


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
