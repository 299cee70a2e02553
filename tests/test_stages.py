"""The stage registry (ptychopipe.stages) against its derivations: every rule in
workflow/rules that runs a stage passes exactly the registry's named files, declares each
input it passes, and writes ``--out`` to the registry's file; the command line, the
telemetry table and docs/artifacts.md's stage table come from the registry. Each stage's
``run`` sits in its own module, and the modules of the computation touch no artifact file."""

from __future__ import annotations

import importlib
import inspect
import re
import pytest

from ptychopipe import cli, reporting
from ptychopipe.artifacts import ARTIFACTS
from ptychopipe.config import ConfigError, from_json, stage_config, to_json
from ptychopipe.configdoc import generate_stages
from ptychopipe.stages import STAGES, markdown_table, run_stage, stage, telemetry_files

from pipeline_helpers import CONFIG_FILE, REPO

COMMON_OPTIONS = {"scenario", "config", "out", "threads"}
#: The modules of the stages' computation that touch no artifact (the compare stage's evaluation
#: package reads what it scores, the chain and the data-space scores: ptychopipe.evaluation).
DOMAIN_MODULES = ("simulate", "ingest", "grouping", "normalize", "train", "infer", "stitch", "baseline/ptychi",
                  "baseline/reconstruction")


def _rules() -> dict[str, str]:
    """rule name -> its text, from every workflow/rules/*.smk."""
    out = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        parts = re.split(r"^rule (\w+):\n", path.read_text(), flags=re.M)
        out.update(dict(zip(parts[1::2], parts[2::2])))
    return out


def _section(text: str, name: str) -> str:
    """The body of a rule's ``name:`` section (up to the next section at the same indent)."""
    m = re.search(rf"^    {name}:\n((?:        .*\n|\s*\n)*)", text, flags=re.M)
    return m.group(1) if m else ""


def _stage_rules() -> dict[str, tuple[str, str]]:
    """stage -> (rule name, rule text) for the rules whose shell runs ``ptychopipe <stage>``."""
    found = {}
    for rule, text in _rules().items():
        m = re.search(r"python3 -m ptychopipe (\w+) ", _section(text, "shell"))
        if m and m.group(1) in STAGES:
            assert m.group(1) not in found, f"stage {m.group(1)} run by rules {found[m.group(1)][0]} and {rule}"
            found[m.group(1)] = (rule, text)
    return found


def test_every_stage_has_exactly_one_rule():
    assert set(_stage_rules()) == set(STAGES)


@pytest.mark.parametrize("name", list(STAGES))
def test_the_rule_passes_exactly_the_registry_files_and_declares_its_inputs(name):
    st = STAGES[name]
    rule, text = _stage_rules()[name]
    shell = " ".join(re.findall(r'"([^"]*)"', _section(text, "shell")))
    options = {o.replace("-", "_") for o in re.findall(r"--([a-z][a-z0-9-]*)", shell)}
    optional_in_params = {o for o in st.optional_inputs if re.search(rf"--{o} \{{input\.{o}\}}", text)}
    assert options | optional_in_params == COMMON_OPTIONS | set(st.inputs) | set(st.optional_inputs) | set(st.outputs), rule
    declared = set(re.findall(r"^        (\w+)=", _section(text, "input"), flags=re.M))
    for name_ in st.inputs + st.optional_inputs:
        assert name_ in declared, f"rule {rule}: --{name_} is not a declared input"
        if name_ in st.inputs:
            assert f"--{name_} {{input.{name_}}}" in shell, f"rule {rule}: --{name_} does not pass input.{name_}"
    out = re.search(r"--out \{output(?:\.(\w+))?\}", shell)
    assert out, f"rule {rule}: no --out {{output}}"
    outputs = _section(text, "output")
    path = (re.search(rf'{out.group(1)}="([^"]+)"', outputs) if out.group(1) else re.search(r'"([^"]+)"', outputs))
    assert path and path.group(1) == f"results/{{scenario}}/{st.out}", rule


def test_the_command_line_is_built_from_the_registry():
    parser = cli.build_parser()
    for st in STAGES.values():
        args = ["--scenario", "s", "--config", "{}", "--out", "o"]
        args += [a for n in st.inputs for a in (f"--{n}", f"{n}.h5")]
        args += [a for n in st.outputs for a in (f"--{n.replace('_', '-')}", n)]
        ns = parser.parse_args([st.name, *args])
        assert all(getattr(ns, n) == f"{n}.h5" for n in st.inputs)
        assert all(getattr(ns, n) is None for n in st.optional_inputs)
        if st.inputs:  # a required input left out is refused
            with pytest.raises(SystemExit):
                parser.parse_args([st.name, *args[:6]])


def test_telemetry_table_and_docs_derive_from_the_registry():
    assert reporting.STAGE_FILES == telemetry_files()
    assert ("train.h5", "train") in telemetry_files()
    assert not any(s == "baseline" for _, s in telemetry_files())
    doc = REPO / "docs" / "artifacts.md"
    assert generate_stages(doc) == doc.read_text(), "run python -m ptychopipe config-doc"
    for st in STAGES.values():
        assert f"| `{st.name}` |" in markdown_table()


def test_options_round_trip_through_the_registry_class():
    from ptychopipe.config import load_scenarios

    params = load_scenarios(CONFIG_FILE, "ci")["gs2_custom"]
    for name in ("split", "group", "train", "stitch"):
        cfg = stage_config(params, name)
        assert isinstance(cfg, stage(name).options)
        assert from_json(name, to_json(cfg)) == cfg


def test_unknown_stage_and_wrong_options_are_one_line():
    with pytest.raises(ConfigError, match=r"unknown stage 'fit'; expected one of simulate, ingest, split"):
        stage("fit")
    with pytest.raises(ConfigError, match="unknown stage 'fit'"):
        from_json("fit", "{}")
    with pytest.raises(TypeError, match="stage split: expected SplitConfig options, got dict"):
        run_stage("split", {}, "s", "out.h5", simulated="x.h5")


def test_the_stages_package_holds_one_module_per_stage():
    modules = {p.stem for p in (REPO / "src" / "ptychopipe" / "stages").glob("*.py")} - {"__init__"}
    assert modules == set(STAGES)


@pytest.mark.parametrize("name", list(STAGES))
def test_each_stage_module_defines_run_with_the_registry_files_and_the_registry_calls_it(name):
    st = STAGES[name]
    module = f".{name}"
    params = list(inspect.signature(importlib.import_module(module, "ptychopipe.stages").run).parameters)
    assert params[:2] == ["cfg", "scenario"], module
    assert set(params[2:]) == {"out", *st.inputs, *st.optional_inputs, *st.outputs}, module
    assert f"from {module} import run" in inspect.getsource(st.run), name


def _artifact_io(text: str) -> list[str]:
    """What in a module's source reads or writes an artifact file, or defines a stage's ``run``."""
    classes = "|".join(c.__name__ for c in ARTIFACTS)
    return re.findall(rf"\b(?:{classes})\.read\w*\(|\.write\(|\.save\(|^def run\b|"
                      r"\b(?:atomic_path|write_json_atomic|write_text_atomic|write_artifact|save_figure|"
                      r"open_artifact|read_array|read_attrs?|read_telemetry|read_json_object)\b", text, flags=re.M)


@pytest.mark.parametrize("name", DOMAIN_MODULES)
def test_the_computation_reads_and_writes_no_artifact(name):
    """A stage's ``run`` (reading its inputs, writing its artifact) is in ptychopipe.stages, not
    in the module of its computation."""
    assert _artifact_io((REPO / "src" / "ptychopipe" / f"{name}.py").read_text()) == []


def test_the_artifact_scan_finds_what_it_forbids():
    stage = (REPO / "src" / "ptychopipe" / "stages" / "stitch.py").read_text()
    assert {"Inferred.read(", ".write(", "def run"} <= set(_artifact_io(stage))
    assert _artifact_io("model.save(tmp)\nwith atomic_path(out) as tmp:\n") == [".save(", "atomic_path"]
