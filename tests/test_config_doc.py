"""docs/configuration.md's key reference is generated from the configuration schema
(ptychopipe.configdoc, `python -m ptychopipe config-doc`): every schema property has a
description, and the document says what the schema and the shipped config say."""

from __future__ import annotations

import copy

import pytest

from ptychopipe import cli, configdoc
from ptychopipe.config import load_schema, load_yaml
from pipeline_helpers import CONFIG_FILE, REPO

DOC = REPO / "docs" / "configuration.md"


def test_every_schema_property_has_a_description():
    missing = configdoc.missing_descriptions(load_schema())
    assert not missing, ("properties of workflow/schemas/config.schema.yaml without a description (add one, "
                         f"then run python -m ptychopipe config-doc --out docs/configuration.md): {missing}")


def test_docs_configuration_md_is_what_the_schema_gives():
    expected = configdoc.generate(DOC, configfile=CONFIG_FILE)
    assert DOC.read_text() == expected, ("docs/configuration.md disagrees with workflow/schemas/config.schema.yaml "
                                         "or config/scenarios.yaml: run python -m ptychopipe config-doc "
                                         "--out docs/configuration.md")


def test_every_key_of_the_shipped_defaults_is_documented_with_its_default():
    text = DOC.read_text()
    defaults = load_yaml(CONFIG_FILE)["defaults"]

    def leaves(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    keys = dict(leaves(defaults))
    assert {"source.file", "baseline.engine", "model.estimate_iterations", "compare.register"} <= set(keys)
    for key, value in keys.items():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} has no row in docs/configuration.md"
        assert f"`{configdoc._value(value)}`" in row, (key, row)
    for top in ("preset", "run", "defaults", "presets", "scenarios", "sweeps", "sweeps.<name>.param"):
        assert f"| `{top}` |" in text, top


def test_a_property_without_a_description_is_named():
    schema = copy.deepcopy(load_schema())
    del schema["$defs"]["params"]["properties"]["object"]["properties"]["size"]["description"]
    schema["$defs"]["params"]["properties"]["train"]["properties"]["new_key"] = {"type": "integer"}
    assert configdoc.missing_descriptions(schema) == ["object.size", "train.new_key"]


def test_render_shows_type_default_presets_allowed_unit_and_description():
    schema, config = load_schema(), load_yaml(CONFIG_FILE)
    rows = {ln.split(" | ")[0]: ln for ln in configdoc.render(schema, config) if ln.startswith("| `")}
    assert rows["| `object.size`"] == ("| `object.size` | integer | `392` | ci: `128`; quick: `256` | ≥ 32, ≤ 8192 | px | "
                                      "Object height = width; at least N + 2·scan.buffer_px + 1. |")
    assert "| `photons per pattern` |" not in rows["| `nphotons`"] and "| photons per pattern |" in rows["| `nphotons`"]
    assert "`ideal` / `custom`" in rows["| `probe.kind`"]


def test_config_doc_command_writes_checks_and_keeps_the_hand_written_text(tmp_path, capsys):
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# Title\n\nProse above.\n\n{configdoc.START}\nstale\n{configdoc.END}\n\nProse below.\n")
    args = ["config-doc", "--out", str(doc), "--configfile", str(CONFIG_FILE)]
    assert cli.main([*args, "--check"]) == 1
    assert "stale" in doc.read_text()
    assert cli.main(args) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nProse above.\n") and text.endswith("\nProse below.\n")
    assert "stale" not in text and "| `baseline.seed` |" in text
    assert cli.main([*args, "--check"]) == 0
    capsys.readouterr()


def test_config_doc_refuses_a_document_without_markers(tmp_path, capsys):
    doc = tmp_path / "configuration.md"
    doc.write_text("# Title\n")
    assert cli.main(["config-doc", "--out", str(doc), "--configfile", str(CONFIG_FILE)]) == 1
    err = capsys.readouterr().err
    assert "expected one line <!-- config-doc:start -->" in err


@pytest.mark.parametrize("path", ["sweeps.<name>.labels", "source.diffraction", "baseline.snapshots"])
def test_properties_walks_sweeps_source_and_baseline(path):
    assert path in dict(configdoc.properties(load_schema()))
