"""Command line: stage commands fail with one line and exit 1; telemetry and params-diff."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

import ptychopipe
from ptychopipe import cli
from ptychopipe.config import load_scenarios, stage_config, to_json
from pipeline_helpers import CONFIG_FILE


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """cli.main sets thread-limit variables in os.environ; keep them out of other tests."""
    monkeypatch.setattr(os, "environ", dict(os.environ))


def _main(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _json(scenario, stage, **override):
    p = load_scenarios(CONFIG_FILE, "ci")[scenario]
    for k, v in override.items():
        p[k] = {**p[k], **v} if isinstance(v, dict) else v
    return to_json(stage_config(p, stage))


def test_stage_command_writes_the_artifact(tmp_path, capsys):
    out = tmp_path / "sim.h5"
    rc, _, err = _main(capsys, "simulate", "--scenario", "gs1_ideal", "--config", _json("gs1_ideal", "simulate"),
                       "--out", str(out), "--threads", "1")
    assert rc == 0 and out.is_file(), err


@pytest.mark.parametrize("argv,pattern", [
    (["simulate", "--scenario", "s", "--config", "{bad json"],
     r"ptychopipe simulate: error: stage config for simulate: not valid JSON .*"),
    (["simulate", "--scenario", "s", "--config", '{"N": 64}'],
     r"ptychopipe simulate: error: stage config for simulate: expected keys \[.*\], got \['N'\]"),
    (["infer", "--scenario", "s", "--config", '{"batch_size": "16", "model_from": null}', "--normalized", "n.h5",
      "--model", "m.keras"],
     r"ptychopipe infer: error: stage config for infer\.batch_size: expected int, got \"16\""),
    (["split", "--scenario", "s", "--config", '{"fraction": 0.5}', "--simulated", "missing.h5"],
     r"ptychopipe split: error: missing\.h5: file not found \(expected the simulate stage's output\)"),
])
def test_stage_errors_are_one_line_with_exit_1(tmp_path, capsys, argv, pattern):
    out = tmp_path / "o.h5"
    rc, _, err = _main(capsys, *argv, "--out", str(out))
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(pattern, lines[0]), lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.stage
def test_missing_custom_probe_fails_in_a_real_process(tmp_path):
    """The command a rule runs: exit status 1, one stderr line naming the file, no output."""
    cfg = _json("gs1_custom", "simulate", probe={"kind": "custom", "file": str(tmp_path / "gone.npz")})
    out = tmp_path / "sim.h5"
    proc = subprocess.run([sys.executable, "-m", "ptychopipe", "simulate", "--scenario", "gs1_custom",
                           "--config", cfg, "--out", str(out), "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"ptychopipe simulate: error: {tmp_path / 'gone.npz'}: probe file not found"
    assert list(tmp_path.iterdir()) == []


def test_group_command_names_the_split_and_numbers(ci_data, tmp_path, capsys):
    d = ci_data["gs1_ideal"]
    cfg = '{"gridsize": 2, "n_groups": 5, "neighbour_count": 500, "seed": 1}'
    rc, _, err = _main(capsys, "group", "--scenario", "gs1_ideal", "--config", cfg, "--simulated", str(d["simulated"]),
                       "--split", str(d["split"]), "--out", str(tmp_path / "g.h5"))
    assert rc == 1
    assert len(err.strip().splitlines()) == 1, err
    assert err.strip().startswith(f"ptychopipe group: error: {d['split']}: train/indices: [group] train: ")
    assert err.strip().endswith("patterns available, need at least 500 (C = 4, K = 500)")
    assert list(tmp_path.iterdir()) == []  # no output, no temp file


def _error_classes() -> list[type]:
    """Every exception class defined in a ptychopipe module, the subpackages' included."""
    import importlib
    import inspect
    import pkgutil

    import ptychopipe
    found = []
    for info in pkgutil.walk_packages(ptychopipe.__path__, "ptychopipe."):
        if info.name == "ptychopipe.__main__":
            continue
        mod = importlib.import_module(info.name)
        found += [c for _, c in inspect.getmembers(mod, inspect.isclass)
                  if issubclass(c, BaseException) and c.__module__ == mod.__name__]
    return found


def test_every_module_error_derives_from_ptychopipe_error():
    """A module's own error class that forgot the base would print a traceback from the CLI."""
    from ptychopipe.errors import PtychopipeError

    classes = _error_classes()
    assert {"ConfigError", "ArtifactError", "ProbeFileError", "GroupingError", "TooFewPatterns", "InvariantError",
            "NonFiniteError", "IngestError", "ExportError", "BaselineError", "BaselineUnavailable"} <= {
        c.__name__ for c in classes}
    assert [c.__name__ for c in classes if not issubclass(c, PtychopipeError)] == []


def test_a_new_error_subclass_is_one_line_without_registration(monkeypatch, tmp_path, capsys):
    """A stage raising a subclass nobody listed: one stderr line, exit 1 (through cli.main)."""
    from ptychopipe import grouping
    from ptychopipe.stages import split

    class LaterError(grouping.GroupingError):
        pass

    def fail(*_, **__):
        raise LaterError("results/x/simulated.h5: positions: [split] a new check\nsecond line not shown")

    monkeypatch.setattr(split, "run", fail)
    rc, _, err = _main(capsys, "split", "--scenario", "s", "--config", '{"fraction": 0.5}',
                       "--simulated", "x.h5", "--out", str(tmp_path / "o.h5"))
    assert rc == 1
    assert err == "ptychopipe split: error: results/x/simulated.h5: positions: [split] a new check\n"


def test_an_unwritable_output_path_is_one_line(tmp_path, capsys):
    """An output path that cannot be written (a directory in its place, a file as its parent)
    ends with one line naming it, and leaves no temporary file."""
    cfg = _json("gs1_ideal", "simulate")
    (tmp_path / "sim.h5").mkdir()
    (tmp_path / "plain").write_text("")
    for out, pattern in ((tmp_path / "sim.h5", r"Is a directory: .*sim\.h5"),
                         (tmp_path / "plain" / "sim.h5", r"(File exists|Not a directory): .*plain")):
        rc, _, err = _main(capsys, "simulate", "--scenario", "gs1_ideal", "--config", cfg, "--out", str(out),
                           "--threads", "1")
        lines = err.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and lines[0].startswith("ptychopipe simulate: error: "), err
        assert re.search(pattern, lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plain", "sim.h5"]


def test_thread_limits_replace_their_own_xla_flags(monkeypatch):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))  # restored after the test
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    cli.set_thread_limits(2)
    cli.set_thread_limits(1)
    assert os.environ["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x", "--xla_cpu_multi_thread_eigen=false",
                                               "intra_op_parallelism_threads=1"]
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_only_the_plain_builtin_errors_are_one_line():
    """ValueError/KeyError/FileNotFoundError themselves are; a library's subclass keeps its traceback."""
    import json

    assert all(cli.is_one_line_error(e) for e in (ValueError("x"), KeyError("x"), FileNotFoundError("x")))
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads("{")
    assert not cli.is_one_line_error(info.value)
    assert not cli.is_one_line_error(RuntimeError("x")) and not cli.is_one_line_error(TypeError("x"))
    # an OS error about a named path is one line; h5py's own OSErrors (no errno, no path) are not
    assert cli.is_one_line_error(IsADirectoryError(21, "Is a directory", "results/x.h5"))
    assert cli.is_one_line_error(OSError(28, "No space left on device", "results/x.h5"))
    assert not cli.is_one_line_error(OSError("Unable to synchronously open file (file signature not found)"))


# --------------------------------------------------------------------------- telemetry


@pytest.fixture
def results_tree(ci_data, tmp_path):
    """results/{scenario}/*.h5 for the two ci scenarios, plus a stale folder."""
    res = tmp_path / "results"
    for scen, d in ci_data.items():
        (res / scen).mkdir(parents=True)
        for k in ("simulated", "split", "grouped", "normalized"):
            shutil.copy(d[k], res / scen / f"{k}.h5")
    shutil.copytree(res / "gs1_ideal", res / "old_scenario")
    return res


def test_telemetry_table(results_tree, capsys):
    md, csv_path = results_tree / "telemetry.md", results_tree / "telemetry.csv"
    rc, out, err = _main(capsys, "telemetry", "--results", str(results_tree), "--md", str(md), "--csv", str(csv_path),
                         "--scenarios=gs1_ideal,gs2_custom")
    assert rc == 0, err
    rows = list(csv.DictReader(csv_path.open()))
    assert {r["scenario"] for r in rows} == {"gs1_ideal", "gs2_custom"}  # the stale folder is left out
    stages = [r["stage"] for r in rows if r["scenario"] == "gs2_custom"]
    assert stages == sorted(stages, key=["simulate", "split", "group", "normalize"].index)
    by = {(r["scenario"], r["stage"], r["array"]): r for r in rows}
    for key in [("gs2_custom", "simulate", "counts"), ("gs2_custom", "group", "train/amplitude"),
                ("gs2_custom", "normalize", "train/inputs"), ("gs1_ideal", "split", "test/indices")]:
        assert key in by, key
    r = by[("gs2_custom", "simulate", "counts")]
    assert r["nan"] == "0" and r["inf"] == "0" and r["shape"] == "192x64x64" and r["dtype"] == "float32"
    assert "parseval=1" in r["stage_ratios"] and "dose=1" in r["stage_ratios"]
    # the amplitude chain: normalize/train inputs over group/train amplitude = a
    a = float(by[("gs2_custom", "normalize", "train/inputs")]["ratio_to_previous"])
    assert f"input_scale={a:.6g}" in by[("gs2_custom", "normalize", "probe")]["stage_ratios"]
    text = md.read_text()
    assert text.startswith("# Telemetry") and "| scenario | stage | array |" in text
    assert text.count("\n| gs2_custom |") == sum(1 for r in rows if r["scenario"] == "gs2_custom")
    rc, _, _ = _main(capsys, "telemetry", "--results", str(results_tree), "--md", str(md), "--csv", str(csv_path))
    assert {r["scenario"] for r in csv.DictReader(csv_path.open())} == {"gs1_ideal", "gs2_custom", "old_scenario"}


def test_telemetry_of_named_artifacts_reads_exactly_those(results_tree, capsys):
    """The workflow names every artifact the table covers: only those are read (the other
    scenarios and stages under the same folder are not), scenarios in name order, stages in
    pipeline order whatever the order given."""
    md, csv_path = results_tree / "telemetry.md", results_tree / "telemetry.csv"
    files = [results_tree / "gs2_custom" / "normalized.h5", results_tree / "old_scenario" / "split.h5",
             results_tree / "gs2_custom" / "simulated.h5"]
    rc, out, err = _main(capsys, "telemetry", "--md", str(md), "--csv", str(csv_path), *map(str, files))
    assert rc == 0, err
    rows = list(csv.DictReader(csv_path.open()))
    assert list(dict.fromkeys((r["scenario"], r["stage"]) for r in rows)) == [
        ("gs2_custom", "simulate"), ("gs2_custom", "normalize"), ("old_scenario", "split")]


@pytest.mark.parametrize("args,pattern", [
    (("--scenarios=typo",), r"--scenarios: no results for \['typo'\] .*expected scenarios from \['gs1_ideal', "
                            r"'gs2_custom', 'old_scenario'\]; nothing written"),
    (("--scenarios=gs1_ideal,typo",), r"--scenarios: no results for \['typo'\]"),
    (("--scenarios=",), r"--scenarios: expected at least one scenario name, got none"),
    (("--results", "/nonexistent/results"), r"/nonexistent/results: results folder not found \(--results\)"),
    (("--results", "EMPTY"), r"no scenario results \(no \*/simulated\.h5\)"),
    (("RES/gs1_ideal/notes.h5",), r"gs1_ideal/notes\.h5: not a stage artifact; expected one of \['simulated\.h5', "),
    (("RES/gs1_ideal/simulated.h5", "RES/gs1_ideal/train.h5"), r"gs1_ideal/train\.h5: file not found"),
    (("--scenarios=gs1_ideal", "RES/gs1_ideal/simulated.h5"), r"--scenarios goes with --results, not with named"),
])
def test_telemetry_never_replaces_the_table_with_an_empty_one(results_tree, tmp_path, capsys, args, pattern):
    """An unknown scenario, a missing or empty results folder, a named file that is no stage artifact
    or is missing: one line, exit 1, the existing table untouched."""
    md, csv_path = results_tree / "telemetry.md", results_tree / "telemetry.csv"
    rc, _, err = _main(capsys, "telemetry", "--results", str(results_tree), "--md", str(md), "--csv", str(csv_path))
    assert rc == 0, err
    before = (md.read_bytes(), csv_path.read_bytes())
    (tmp_path / "EMPTY").mkdir()
    args = tuple(str(tmp_path / "EMPTY") if a == "EMPTY" else a.replace("RES", str(results_tree)) for a in args)
    rc, out, err = _main(capsys, "telemetry", "--results", str(results_tree), "--md", str(md), "--csv", str(csv_path),
                         *args)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("ptychopipe telemetry: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert (md.read_bytes(), csv_path.read_bytes()) == before
    assert sorted(p.name for p in results_tree.iterdir() if p.is_file()) == ["telemetry.csv", "telemetry.md"]


# --------------------------------------------------------------------------- params-diff


def test_params_diff_between_scenarios(capsys):
    rc, out, _ = _main(capsys, "params-diff", "gs1_ideal", "gs2_custom", "--configfile", str(CONFIG_FILE),
                       "--preset", "full")
    assert rc == 0
    lines = out.splitlines()
    # which file and preset were merged (and the version) come first
    assert lines[0] == (f"# merged: both from {CONFIG_FILE}, preset full (--preset); "
                        f"ptychopipe {ptychopipe.__version__}")
    lines = lines[1:]
    assert lines[0].split() == ["stage.parameter", "gs1_ideal", "|", "gs2_custom"]
    assert "[simulate]" in lines and "[group]" in lines
    assert any(ln.split() == ["simulate.n_positions", "2000", "|", "8000"] for ln in lines)
    assert any(ln.split() == ["group.gridsize", "1", "|", "2"] for ln in lines)
    assert lines.index("[simulate]") < lines.index("[group]")


def test_params_diff_against_another_file(tmp_path, capsys):
    raw = yaml.safe_load(CONFIG_FILE.read_text())
    raw["scenarios"]["gs2_custom"]["nphotons"] = 1.0e+4
    other = tmp_path / "edited.yaml"
    other.write_text(yaml.safe_dump(raw))
    rc, out, _ = _main(capsys, "params-diff", "gs2_custom", f"{other}:gs2_custom", "--configfile", str(CONFIG_FILE))
    assert rc == 0
    preset = yaml.safe_load(CONFIG_FILE.read_text())["preset"]
    assert out.splitlines()[0] == (f"# merged: gs2_custom from {CONFIG_FILE}, preset {preset} (the file); "
                                   f"{other}:gs2_custom from {other}, preset {preset} (the file); "
                                   f"ptychopipe {ptychopipe.__version__}")
    body = [ln.split() for ln in out.splitlines()[2:]]
    assert body == [["[simulate]"], ["simulate.nphotons", "1000000000.0", "|", "10000.0"]]
    rc, out, _ = _main(capsys, "params-diff", "gs1_ideal", "gs1_ideal", "--configfile", str(CONFIG_FILE))
    assert out.splitlines()[1:] == ["no differences between gs1_ideal and gs1_ideal"]


def test_params_diff_unknown_scenario_is_one_line(capsys):
    rc, out, err = _main(capsys, "params-diff", "gs1_ideal", "gs7", "--configfile", str(CONFIG_FILE))
    assert rc == 1
    assert err.strip() == (f"ptychopipe params-diff: error: {CONFIG_FILE}: scenario 'gs7' not found; expected one of "
                           "['dose_10000', 'dose_100000', 'dose_1e06', 'dose_1e07', 'dose_1e09', 'gs1_custom', "
                           "'gs1_ideal', 'gs2_custom', 'gs2_ideal', 'mode_dm200_unet', 'mode_unrolled10', 'unseen_blobs', "
                           "'unseen_lines']")  # the dose sweep's scenarios too


# --------------------------------------------------------------------------- TensorFlow start-up notices


def test_tensorflow_start_up_notices_are_filtered_from_stderr(capfd):
    """The notices TensorFlow writes to file descriptor 2 before logging is set up are dropped;
    every other line written meanwhile is passed on, in order."""
    from ptychopipe.quiet import filtered_stderr

    with filtered_stderr():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"E0000 00:00:1.0 1 cuda_executor.cc:1228] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"a real warning\n")
        os.write(2, b"and another\n")
    assert capfd.readouterr().err == "a real warning\nand another\n"


@pytest.mark.stage
def test_a_keras_stage_prints_no_start_up_notices(tmp_path):
    """`ptychopipe infer` (imports Keras and TensorFlow) on a missing model: its one error line only."""
    res = subprocess.run([sys.executable, "-m", "ptychopipe", "infer", "--scenario", "s", "--config",
                          _json("gs1_ideal", "infer"), "--normalized", str(tmp_path / "n.h5"), "--model",
                          str(tmp_path / "m.keras"), "--out", str(tmp_path / "i.h5")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [f"ptychopipe infer: error: {tmp_path / 'n.h5'}: file not found "
                                       "(expected the normalize stage's output)"]


# --------------------------------------------------------------------------- progress lines


def test_progress_lines_go_to_the_log_and_the_progress_descriptor(monkeypatch, capsys):
    """progress(): stdout (the log) always; the descriptor named by PTYCHOPIPE_PROGRESS_FD too
    (the rules duplicate Snakemake's stderr to it); a closed descriptor is ignored."""
    from ptychopipe.progress import PROGRESS_FD_ENV, duration, progress

    r, w = os.pipe()
    monkeypatch.setenv(PROGRESS_FD_ENV, str(w))
    progress("[train] s epoch 1/2: loss 1")
    os.close(w)
    assert os.read(r, 1000) == b"[train] s epoch 1/2: loss 1\n"
    os.close(r)
    progress("after the descriptor closed")  # no error
    monkeypatch.delenv(PROGRESS_FD_ENV)
    progress("log only")
    assert capsys.readouterr().out == "[train] s epoch 1/2: loss 1\nafter the descriptor closed\nlog only\n"
    assert [duration(s) for s in (0.04, 4.2, 42, 187, 3900)] == ["0.0s", "4.2s", "42s", "3m07s", "1h05m"]
