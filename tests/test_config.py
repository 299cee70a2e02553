"""Configuration (docs/design.md, 'Configuration contract'): schema validation with one-line messages naming the key path,
scenario names, presets, sweeps, and frozen per-stage configs."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import yaml

from ptychopipe.config import (ConfigError, DifferenceMapOptions, GradientOptions, config_hash, from_json, load_scenarios, load_yaml,
                               params_diff, resolve_scenarios, resolve_with_overrides, stage_config, to_dict,
                               to_json)
from ptychopipe.stages import STAGES

from pipeline_helpers import CONFIG_FILE

SCENARIOS = ["gs1_custom", "gs1_ideal", "gs2_custom", "gs2_ideal"]


def _set(d, dotted, value):
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def _del(d, dotted):
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d[k]
    del d[keys[-1]]


# (id, mutation of the raw config, preset, expected message (regex, whole line))
BAD = [
    ("unknown key", lambda r: _set(r, "defaults.nphoton", 1e9), None,
     r"cfg\.yaml: defaults: Additional properties are not allowed \('nphoton' was unexpected\)"),
    ("unknown nested key", lambda r: _set(r, "scenarios.gs1_ideal.probe.probe_scale", 2.0), None,
     r"cfg\.yaml: scenarios\.gs1_ideal\.probe: Additional properties are not allowed "
     r"\('probe_scale' was unexpected\)"),
    ("unknown top-level key", lambda r: _set(r, "nphotons", 1), None,
     r"cfg\.yaml: <top level>: Additional properties are not allowed \('nphotons' was unexpected\)"),
    ("wrong type", lambda r: _set(r, "defaults.scan.n_images", "many"), None,
     r"cfg\.yaml: defaults\.scan\.n_images: 'many' is not of type 'integer'"),
    ("bool is not an integer", lambda r: _set(r, "defaults.gridsize", True), None,
     r"cfg\.yaml: defaults\.gridsize: True is not of type 'integer'"),
    ("number written 1e9 in YAML", lambda r: _set(r, "scenarios.gs2_ideal.nphotons", "1e9"), None,
     r"cfg\.yaml: scenarios\.gs2_ideal\.nphotons: '1e9' is not of type 'number' "
     r"\(YAML 1\.1 reads a number like 1e9 as text: write 1\.0e\+9\)"),
    ("nphotons zero", lambda r: _set(r, "scenarios.gs1_ideal.nphotons", 0), None,
     r"cfg\.yaml: scenarios\.gs1_ideal\.nphotons: 0 is less than or equal to the minimum of 0"),
    ("nphotons negative", lambda r: _set(r, "defaults.nphotons", -1.0e6), None,
     r"cfg\.yaml: defaults\.nphotons: -1000000\.0 is less than or equal to the minimum of 0"),
    ("estimate_iterations zero", lambda r: _set(r, "defaults.model.estimate_iterations", 0), None,
     r"cfg\.yaml: defaults\.model\.estimate_iterations: 0 is less than the minimum of 1"),
    ("estimate_momentum 1", lambda r: _set(r, "presets.quick.model", {"estimate_momentum": 1.0}), None,
     r"cfg\.yaml: presets\.quick\.model\.estimate_momentum: 1\.0 is greater than or equal to the maximum of 1"),
    ("estimate_algorithm unknown", lambda r: _set(r, "scenarios.gs2_ideal.model", {"estimate_algorithm": "hio"}),
     None, r"cfg\.yaml: scenarios\.gs2_ideal\.model\.estimate_algorithm: 'hio' is not one of "
           r"\['unrolled', 'difference_map', 'gradient'\]"),
    ("estimate_noise_tolerance negative", lambda r: _set(r, "defaults.model.estimate_noise_tolerance", -1.0), None,
     r"cfg\.yaml: defaults\.model\.estimate_noise_tolerance: -1\.0 is less than the minimum of 0"),
    ("N not allowed", lambda r: _set(r, "defaults.N", 48), None,
     r"cfg\.yaml: defaults\.N: 48 is not one of \[32, 64, 128, 256\]"),
    ("scenario name with /", lambda r: _set(r, "scenarios", {**r["scenarios"], "a/b": {}}), None,
     r"cfg\.yaml: scenarios: 'a/b' does not match '\^\[A-Za-z0-9\]\[A-Za-z0-9_-\]\*\$'"),
    ("scenario name with space", lambda r: _set(r, "scenarios", {**r["scenarios"], "my run": {}}), None,
     r"cfg\.yaml: scenarios: 'my run' does not match .*"),
    ("neighbour_count < gridsize^2", lambda r: _set(r, "scenarios.gs2_ideal.group", {"neighbour_count": 3}), None,
     r"cfg\.yaml: scenario gs2_ideal: group\.neighbour_count: expected >= gridsize\^2 = 4, got 3"),
    ("custom probe without file", lambda r: _set(r, "scenarios.mine", {"probe": {"kind": "custom"}}), None,
     r"cfg\.yaml: scenario mine: probe\.file: expected a file path for probe\.kind=custom, got null"),
    ("unknown probe kind", lambda r: _set(r, "defaults.probe.kind", "gaussian"), None,
     r"cfg\.yaml: defaults\.probe\.kind: 'gaussian' is not one of \['ideal', 'custom'\]"),
    ("unknown preset", lambda r: None, "huge",
     r"cfg\.yaml: preset: 'huge' is not defined; expected one of \['ci', 'full', 'quick'\]"),
    ("min > max range", lambda r: _set(r, "defaults.object.amplitude_range", [1.5, 0.5]), None,
     r"cfg\.yaml: scenario gs1_ideal: object\.amplitude_range: expected min < max, got \[1\.5, 0\.5\]"),
    ("negative amplitude", lambda r: _set(r, "defaults.object.amplitude_range", [-0.5, 0.5]), None,
     r"cfg\.yaml: scenario gs1_ideal: object\.amplitude_range: expected min >= 0, got -0\.5"),
    ("range of one number", lambda r: _set(r, "defaults.object.phase_range", [1.0]), None,
     r"cfg\.yaml: defaults\.object\.phase_range: \[1\.0\] is too short"),
    ("object too small", lambda r: _set(r, "scenarios.gs1_ideal.object", {"size": 64}), None,
     r"cfg\.yaml: scenario gs1_ideal: object\.size: expected >= N \+ 2\*scan\.buffer_px \+ 1 = 85, got 64"),
    ("object too small for N=128", lambda r: _set(r, "scenarios.big", {"N": 128}), "ci",
     r"cfg\.yaml: scenario big: object\.size: expected >= N \+ 2\*scan\.buffer_px \+ 1 = 149, got 128"),
    ("split fraction 1", lambda r: _set(r, "defaults.split.fraction", 1.0), None,
     r"cfg\.yaml: defaults\.split\.fraction: 1\.0 is greater than or equal to the maximum of 1"),
    ("missing parameter after merge", lambda r: _del(r, "defaults.seed"), None,
     r"cfg\.yaml: scenario gs1_ideal \(after merging defaults, preset quick\): <top level>: "
     r"'seed' is a required property"),
    ("min learning rate above learning rate", lambda r: _set(r, "defaults.train.min_learning_rate", 1.0), None,
     r"cfg\.yaml: scenario gs1_ideal: train\.min_learning_rate: expected <= train\.learning_rate = 0\.001, got 1\.0"),
    ("run names an unknown scenario", lambda r: _set(r, "run", ["gs3"]), None,
     r"cfg\.yaml: run: unknown scenario\(s\) \['gs3'\]; expected names from \[.*\]"),
    ("empty scenarios", lambda r: _set(r, "scenarios", {}), None,
     r"cfg\.yaml: scenarios: \{\} should be non-empty"),
    ("sweep of an unknown scenario", lambda r: _set(r, "sweeps", {"dose": {"base": "gs9", "param": "nphotons",
                                                                          "values": [1.0e+4]}}), None,
     r"cfg\.yaml: sweeps\.dose\.base: scenario 'gs9' not found; expected one of \[.*\]"),
    ("sweep to a bad value", lambda r: _set(r, "sweeps", {"dose": {"base": "gs2_ideal", "param": "nphotons",
                                                                  "values": [-1.0]}}), None,
     r"cfg\.yaml: scenario dose_-1 \(after merging defaults, preset quick\): nphotons: -1\.0 is less than or "
     r"equal to the minimum of 0"),
    ("sweep of an unknown parameter", lambda r: _set(r, "sweeps", {"dose": {"base": "gs2_ideal", "param": "photons",
                                                                           "values": [1.0]}}), None,
     r"cfg\.yaml: sweeps\.dose\.param: 'photons' is not a parameter; expected the dotted name of one "
     r"\(e\.g\. nphotons, train\.epochs\) or of a group \(e\.g\. model\)"),
    ("sweep of a parameter group with a number", lambda r: _set(r, "sweeps", {"s": {"base": "gs2_ideal",
                                                                                   "param": "train",
                                                                                   "values": [1.0]}}), None,
     r"cfg\.yaml: sweeps\.s\.values: 'train' is a group of parameters; expected each value to be a mapping .*"),
    ("sweep of a parameter group with a bad key", lambda r: _set(r, "sweeps", {"s": {"base": "gs2_ideal",
                                                                                    "param": "train",
                                                                                    "values": [{"epoch": 3}]}}),
     None, r"cfg\.yaml: scenario s_.*: train: Additional properties are not allowed \('epoch' was unexpected\)"),
    ("infinite nphotons", lambda r: _set(r, "scenarios.gs1_ideal.nphotons", float("inf")), None,
     r"cfg\.yaml: scenarios\.gs1_ideal\.nphotons: expected a finite number, got inf"),
    ("NaN passes every minimum", lambda r: _set(r, "defaults.train.learning_rate", float("nan")), None,
     r"cfg\.yaml: defaults\.train\.learning_rate: expected a finite number, got nan"),
    ("infinite sweep value", lambda r: _set(r, "sweeps", {"dose": {"base": "gs2_ideal", "param": "nphotons",
                                                                  "values": [1.0e+4, float("inf")]}}), None,
     r"cfg\.yaml: sweeps\.dose\.values\[1\]: expected a finite number, got inf"),
    ("twin resolution at gridsize 2", lambda r: _set(r, "scenarios.gs2_ideal.stitch", {"resolve_twin": True}), None,
     r"cfg\.yaml: scenario gs2_ideal: stitch\.resolve_twin: expected gridsize 1 \(one pattern per patch; a "
     r"group's patches share one twin\), got gridsize 2"),
    ("ideal probe wider than the window", lambda r: _set(r, "defaults.probe.footprint_px", 200), None,
     r"cfg\.yaml: scenario gs1_ideal: probe\.footprint_px: expected < N = 64 \(the central lobe inside the "
     r"window; a wider one lights it flat\), got 200"),
]


@pytest.mark.parametrize("mutate,preset,pattern", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_rejected_with_one_line_naming_the_key(raw_config, mutate, preset, pattern):
    mutate(raw_config)
    with pytest.raises(ConfigError) as exc:
        resolve_scenarios(raw_config, preset, source="cfg.yaml")
    msg = str(exc.value)
    assert "\n" not in msg
    assert re.fullmatch(pattern, msg), msg


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found$"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  N: [64\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML \(line 3, column 1\): .+$"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match=r"is a directory; expected the YAML config file$"):
        load_yaml(tmp_path)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping at top level, got list$"):
        load_yaml(lst)


def test_repeated_keys_are_refused_with_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys; the config reader refuses them, at any depth."""
    dup = tmp_path / "dup.yaml"
    dup.write_text("scenarios:\n  a: {gridsize: 1}\n  b: {gridsize: 2}\n  a: {gridsize: 2}\n")
    with pytest.raises(ConfigError, match=r"^\S*dup\.yaml: not valid YAML \(line 4, column 3\): duplicate key 'a' "
                                          r"\(first defined on line 2\)$"):
        load_yaml(dup)
    dup.write_text("defaults:\n  probe: {kind: ideal, kind: custom}\n")
    with pytest.raises(ConfigError, match=r"line 2, column 24\): duplicate key 'kind' \(first defined on line 2\)$"):
        load_yaml(dup)
    ok = tmp_path / "ok.yaml"  # merge keys (<<:) still merge, and equal keys in different mappings are fine
    ok.write_text("base: &b {N: 64, seed: 1}\nother:\n  <<: *b\n  seed: 2\nthird: {N: 32}\n")
    assert load_yaml(ok) == {"base": {"N": 64, "seed": 1}, "other": {"N": 64, "seed": 2}, "third": {"N": 32}}


@pytest.mark.parametrize("name", ["-x", "_x", "-"])
def test_scenario_names_start_with_a_letter_or_digit(raw_config, name):
    """`--scenario -x` would read as an option on every stage's command line: refused at validation."""
    raw_config["scenarios"][name] = {"gridsize": 1}
    with pytest.raises(ConfigError, match=rf"^cfg\.yaml: scenarios: '{re.escape(name)}' does not match"):
        resolve_scenarios(raw_config, source="cfg.yaml")
    raw_config["scenarios"].pop(name)
    raw_config["scenarios"]["9x_-"] = {"gridsize": 1}
    assert "9x_-" in resolve_scenarios(raw_config, source="cfg.yaml")


def test_command_line_errors_name_the_command_line(raw_config):
    """An error that a --config value brings in is the command line's; the file's own errors stay the file's."""
    merged = {**raw_config, "preset": "huge"}
    with pytest.raises(ConfigError, match=r"^command line --config preset=huge: preset: 'huge' is not defined"):
        resolve_with_overrides(raw_config, merged, {"preset": "huge"}, "config/scenarios.yaml")
    bad_file = {**raw_config, "defaults": {**raw_config["defaults"], "nphotons": -1}}
    with pytest.raises(ConfigError, match=r"^config/scenarios\.yaml: defaults\.nphotons"):
        resolve_with_overrides(bad_file, {**bad_file, "preset": "ci"}, {"preset": "ci"}, "config/scenarios.yaml")
    assert set(resolve_with_overrides(raw_config, {**raw_config, "preset": "ci"}, {"preset": "ci"}, "f")) == \
        set(resolve_scenarios(raw_config, "ci"))


@pytest.mark.parametrize("preset", ["ci", "quick", "full"])
def test_shipped_config_is_valid_for_every_preset(preset):
    scen = load_scenarios(CONFIG_FILE, preset)
    # + the dose sweep (test_dose_sweep.py), the other reconstruction modes of gs2_custom and its
    # model on scans it was not trained on
    swept = ("dose_", "mode_", "unseen_")
    assert sorted(s for s in scen if not s.startswith(swept)) == SCENARIOS
    assert sorted(s for s in scen if s.startswith(swept[1:])) == ["mode_dm200_unet", "mode_unrolled10",
                                                                   "unseen_blobs", "unseen_lines"]
    assert {s: p["infer"]["model_from"] for s, p in scen.items() if p["infer"]["model_from"]} == {
        "unseen_blobs": "gs2_custom", "unseen_lines": "gs2_custom"}
    for name, p in scen.items():
        assert p["gridsize"] == (2 if name.startswith(("gs2", *swept)) else 1)
        assert p["probe"]["kind"] == ("custom" if name.startswith(swept) else name.split("_")[1])
        for stage in STAGES:
            stage_config(p, stage)


def test_full_preset_is_the_reference_parameters():
    p = load_scenarios(CONFIG_FILE, "full")["gs2_custom"]
    sim = stage_config(p, "simulate")
    assert (sim.N, sim.object.size, sim.object.seed, sim.buffer_px, sim.n_positions, sim.nphotons) == \
        (64, 392, 42, 10.0, 8000, 1e9)
    g = stage_config(p, "group")
    assert (g.n_groups, g.neighbour_count, g.gridsize) == (1000, 4, 2)
    assert stage_config(p, "split").fraction == 0.5
    t = stage_config(p, "train")
    assert (t.batch_size, t.epochs) == (16, 60)


def test_ideal_probe_footprint_defaults_to_half_the_window(raw_config):
    """docs/design.md, 'Configuration contract': the ideal probe's footprint spans about N/2. The shipped default (null)
    follows N; the simulate config records the number, so at N = 64 it is the same config
    (same hash, nothing re-runs) as an explicit 32; an explicit value is kept at any N."""
    assert raw_config["defaults"]["probe"]["footprint_px"] is None
    _set(raw_config, "scenarios.big", {"N": 128, "object": {"size": 256}})
    _set(raw_config, "scenarios.big_narrow", {"N": 128, "object": {"size": 256}, "probe": {"footprint_px": 24}})
    _set(raw_config, "scenarios.explicit", {"probe": {"footprint_px": 32}})
    scen = resolve_scenarios(raw_config, "full", source="cfg.yaml")
    sim = {name: stage_config(scen[name], "simulate") for name in ("gs1_ideal", "explicit", "big", "big_narrow")}
    assert sim["gs1_ideal"].probe.footprint_px == 32.0
    assert config_hash(sim["gs1_ideal"]) == config_hash(sim["explicit"])
    assert sim["big"].probe.footprint_px == 64.0
    assert sim["big_narrow"].probe.footprint_px == 24.0
    assert stage_config(scen["gs1_custom"], "simulate").probe.footprint_px is None  # not a custom probe's knob


def test_preset_then_scenario_override_order(raw_config):
    raw_config["presets"]["ci"]["nphotons"] = 5.0e+5
    raw_config["scenarios"]["gs1_ideal"]["nphotons"] = 7.0e+3
    scen = resolve_scenarios(raw_config, "ci")
    assert scen["gs1_ideal"]["nphotons"] == 7e3  # scenario wins over preset
    assert scen["gs2_ideal"]["nphotons"] == 5e5  # preset wins over defaults
    assert scen["gs2_ideal"]["object"]["size"] == 128 and scen["gs2_ideal"]["object"]["seed"] == 42  # deep merge


def test_preset_comes_from_the_file_unless_given(raw_config):
    raw_config["preset"] = "ci"
    assert resolve_scenarios(raw_config)["gs1_ideal"]["scan"]["n_images"] == 48
    assert resolve_scenarios(raw_config, "full")["gs1_ideal"]["scan"]["n_images"] == 2000


def test_run_restricts_scenarios(raw_config):
    raw_config["run"] = ["gs2_ideal"]
    assert list(resolve_scenarios(raw_config, "ci")) == ["gs2_ideal"]


def test_sweeps_expand_to_named_scenarios(raw_config):
    raw_config["sweeps"] = {"dose": {"base": "gs2_custom", "param": "nphotons", "values": [1.0e+4, 1.0e+9]},
                            "fp": {"base": "gs1_ideal", "param": "probe.footprint_px", "values": [16, 24],
                                   "labels": ["small", "mid"]}}
    scen = resolve_scenarios(raw_config, "ci")
    assert {"dose_10000", "dose_1e09", "fp_small", "fp_mid"} <= set(scen)
    assert scen["dose_10000"]["nphotons"] == 1e4
    assert scen["dose_10000"]["probe"]["kind"] == "custom" and scen["dose_10000"]["gridsize"] == 2
    assert scen["fp_mid"]["probe"]["footprint_px"] == 24


def test_stage_configs_are_frozen_and_round_trip_through_json():
    p = load_scenarios(CONFIG_FILE, "ci")["gs2_custom"]
    for stage in STAGES:
        cfg = stage_config(p, stage)
        assert dataclasses.is_dataclass(cfg)
        field = dataclasses.fields(cfg)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, field, None)
        text = to_json(cfg)
        back = from_json(stage, text)
        assert back == cfg and to_json(back) == text
        assert config_hash(back) == config_hash(cfg) and len(config_hash(cfg)) == 16
    sim = stage_config(p, "simulate")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sim.object.size = 3  # nested configs are frozen too
    assert isinstance(sim.object.amplitude_range, tuple)


def test_from_json_refuses_wrong_keys_and_bad_json():
    p = load_scenarios(CONFIG_FILE, "ci")["gs1_ideal"]
    d = to_dict(stage_config(p, "group"))
    d["extra"] = 1
    with pytest.raises(ConfigError, match=r"stage config for group: expected keys \[.*\], got \[.*'extra'.*\]"):
        from_json("group", json.dumps(d))
    with pytest.raises(ConfigError, match=r"stage config for split: not valid JSON"):
        from_json("split", "{fraction: 0.5")
    with pytest.raises(ConfigError, match=r"unknown stage 'bake'"):
        from_json("bake", "{}")


@pytest.mark.parametrize("path,value,message", [
    (("batch_size",), "16", 'stage config for train.batch_size: expected int, got "16"'),
    (("batch_size",), 16.5, "stage config for train.batch_size: expected int, got 16.5"),
    (("batch_size",), None, "stage config for train.batch_size: expected int, got null"),
    (("model", "unet", "filters"), True, "stage config for train.model.unet.filters: expected int, got true"),
    (("learning_rate",), "fast", 'stage config for train.learning_rate: expected a finite float, got "fast"'),
    (("model", "estimate", "algorithm"), 3,
     "stage config for train.model.estimate.algorithm: expected one of ['difference_map', 'gradient', 'unrolled'], got 3"),
    (("model", "estimate", "iterations"), 0, "model.estimate_iterations: expected >= 1, got 0"),
    (("loss",), [0, 0], "stage config for train.loss: expected an object, got list"),
    (("learning_rate",), 10 ** 400, "stage config for train.learning_rate: expected a finite float, got 1" + "0" * 79),
    (("learning_rate",), float("nan"), "stage config for train.learning_rate: expected a finite float, got NaN"),
])
def test_from_json_refuses_wrong_value_types_with_their_path(path, value, message):
    """A hand-written --config is type-checked field by field (the YAML already passed the
    schema): one ConfigError naming the key, not a TypeError deep in the stage."""
    p = load_scenarios(CONFIG_FILE, "ci")["gs1_ideal"]
    d = to_dict(stage_config(p, "train"))
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        from_json("train", json.dumps(d))
    assert str(err.value) == message


def test_from_json_checks_tuples_and_optional_fields_and_stores_floats():
    p = load_scenarios(CONFIG_FILE, "ci")["gs1_ideal"]
    d = to_dict(stage_config(p, "simulate"))
    where = "stage config for simulate.object.line_length_px"
    for value, message in ((5, f"{where}: expected a list of 2 values, got 5"),
                           ([1, 2, 3], f"{where}: expected a list of 2 values, got [1, 2, 3]"),
                           ([1, "x"], f'{where}[1]: expected a finite float, got "x"')):
        bad = json.loads(json.dumps(d))
        bad["object"]["line_length_px"] = value
        with pytest.raises(ConfigError) as err:
            from_json("simulate", json.dumps(bad))
        assert str(err.value) == message
    d["probe"]["footprint_px"] = None  # Optional: null is a value
    d["probe"]["file"] = None
    assert from_json("simulate", json.dumps(d)).probe.footprint_px is None
    d["probe"]["file"] = 7
    with pytest.raises(ConfigError, match=r"simulate\.probe\.file: expected str, got 7"):
        from_json("simulate", json.dumps(d))
    d = to_dict(stage_config(p, "simulate"))
    d["nphotons"] = 10000  # an integer for a float field: stored as the float stage_config makes
    cfg = from_json("simulate", json.dumps(d))
    assert isinstance(cfg.nphotons, float) and config_hash(cfg) == config_hash(
        dataclasses.replace(stage_config(p, "simulate"), nphotons=10000.0))


def _stage_jsons(params):
    return {s: to_json(stage_config(params, s)) for s in STAGES}


@pytest.mark.parametrize("dotted,value,changed", [
    ("nphotons", 1.0e+5, {"simulate"}),
    ("seed", 7, {"simulate", "group", "train"}),
    ("N", 128, {"simulate", "normalize", "train"}),
    ("group.n_groups", 10, {"group"}),
    ("group.neighbour_count", 9, {"group"}),
    ("split.fraction", 0.6, {"split"}),
    ("object.n_lines", 5, {"simulate"}),
    ("scan.n_images", 12, {"simulate"}),
    ("train.epochs", 3, {"train"}),
    ("infer.batch_size", 3, {"infer"}),
    ("stitch.weight", "uniform", {"stitch"}),
    ("stitch.resolve_twin", True, {"stitch"}),
    # the shipped estimate is the difference map: the gradient's momentum is not a parameter of it
    ("model.estimate_momentum", 0.5, set()),
    ("model.estimate_noise_tolerance", 2.0, {"train"}),
    ("model.estimate_algorithm", "gradient", {"train"}),
    ("model.prior_filters", 4, set()),  # the unrolled model's prior: not a parameter of the U-Net model
    ("model.filters", 4, {"train"}),
])
def test_each_stage_config_carries_exactly_its_own_parameters(dotted, value, changed):
    """A parameter change alters the params (hence re-runs) of exactly the stages that use it;
    downstream stages re-run because their inputs change, not their params."""
    p = load_scenarios(CONFIG_FILE, "full")["gs2_custom"]
    q = yaml.safe_load(yaml.safe_dump(p))
    _set(q, dotted, value)
    a, b = _stage_jsons(p), _stage_jsons(q)
    assert {s for s in STAGES if a[s] != b[s]} == changed


def test_each_estimate_algorithm_carries_only_its_own_knob():
    p = load_scenarios(CONFIG_FILE, "full")["gs2_ideal"]
    grad = yaml.safe_load(yaml.safe_dump(p))
    grad["model"]["estimate_algorithm"] = "gradient"
    m = stage_config(grad, "train").model
    assert m.estimate == GradientOptions(p["model"]["estimate_iterations"], p["model"]["estimate_momentum"])
    m = stage_config(p, "train").model
    assert m.estimate == DifferenceMapOptions(p["model"]["estimate_iterations"],
                                              p["model"]["estimate_noise_tolerance"])
    assert not hasattr(m.estimate, "momentum")
    q = yaml.safe_load(yaml.safe_dump(grad))
    q["model"]["estimate_noise_tolerance"] = 3.0  # unused by the gradient estimate
    assert to_json(stage_config(q, "train")) == to_json(stage_config(grad, "train"))
    for params in (p, grad):  # each algorithm's options survive the rule's JSON
        cfg = stage_config(params, "train")
        assert from_json("train", to_json(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"stage config for train\.model\.estimate\.algorithm: expected one of "
                                          r"\['difference_map', 'gradient', 'unrolled'\], got \"hio\""):
        from_json("train", to_json(stage_config(p, "train")).replace('"difference_map"', '"hio"'))


def test_params_diff_is_stage_by_stage():
    scen = load_scenarios(CONFIG_FILE, "full")
    rows = params_diff(scen["gs1_ideal"], scen["gs2_custom"])
    assert ("simulate", "n_positions", 2000, 8000) in rows
    assert ("simulate", "probe.kind", "ideal", "custom") in rows
    assert ("group", "gridsize", 1, 2) in rows
    order = [r[0] for r in rows]
    assert order == sorted(order, key=list(STAGES).index)
    assert params_diff(scen["gs1_ideal"], scen["gs1_ideal"]) == []
