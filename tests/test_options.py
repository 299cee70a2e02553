"""Typed options against the schema and the shipped defaults, field by field: each options
field declares its default, bounds, unit and description once (config.option); the schema
property it is read from states the same, and config/scenarios.yaml's `defaults:` hold the
same default. A field changed in one place and not the other fails here."""

from __future__ import annotations

import dataclasses
import pytest
import yaml

from ptychopipe.config import (ESTIMATE_OPTIONS, SCHEMA_PATH, ConfigError, DifferenceMapOptions, GradientOptions,
                               UNetOptions, UnrolledOptions, check_options, estimate_options, load_schema)

from pipeline_helpers import CONFIG_FILE

OPTION_CLASSES = (DifferenceMapOptions, GradientOptions, UnrolledOptions, UNetOptions)
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
            assert f.name == "algorithm" or (f.metadata.get("key") and f.metadata.get("description")), (cls, f.name)


@pytest.mark.parametrize("cls,field", _fields(), ids=lambda x: getattr(x, "__name__", getattr(x, "name", "")))
def test_option_agrees_with_the_schema_and_the_shipped_default(cls, field):
    key = field.metadata["key"]
    prop = _schema_property(key)
    assert prop["description"] == field.metadata["description"], key
    assert prop.get("units", "") == field.metadata["unit"], key
    assert {b: prop[b] for b in BOUNDS if b in prop} == field.metadata["bounds"], key
    assert prop["type"] == {"int": "integer", "float": "number"}[field.type], key
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
