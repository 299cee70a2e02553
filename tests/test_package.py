"""Package metadata: `ptychopipe --version`, the LICENSE and CITATION.cff agree with pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
import yaml

import ptychopipe
from ptychopipe import cli
from pipeline_helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_version_option_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ptychopipe {cli.package_version()}"
    assert cli.package_version() == ptychopipe.__version__ == PYPROJECT["version"]


def test_version_option_works_from_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "ptychopipe", "--version"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ptychopipe {PYPROJECT['version']}"


def test_package_version_falls_back_to_the_module_attribute(monkeypatch):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "version", missing)
    assert cli.package_version() == ptychopipe.__version__


def test_license_is_the_bsd_3_clause_text_pyproject_names():
    text = (REPO / "LICENSE").read_text()
    assert PYPROJECT["license"] == "BSD-3-Clause"
    assert text.startswith("BSD 3-Clause License") and "Copyright (c) 2026, the ptychopipe developers" in text
    assert "Neither the name of the copyright holder" in text


def test_citation_cff_matches_pyproject():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert str(cff["version"]) == PYPROJECT["version"]
    assert cff["license"] == PYPROJECT["license"]
    assert cff["title"].startswith("ptychopipe") and cff["authors"] == [{"name": "The ptychopipe developers"}]
