"""The results table of the documentation: ``ptychopipe quality-table`` (run by ``make quality``)
writes one row per scenario (metrics, photons, training time, backend and hardware, date)
between the quality-table markers of results/report/quality_table.md, after checking that
each scenario's artifacts carry the requested preset's config hash, and ``ptychopipe
quality-table --from-table`` copies that block into docs/results.md (``make results-doc``).
Only the block between the markers is this module's; the rest of either file is left as it is."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import ArtifactError, not_a_file, read_attrs, write_text_atomic
from ..telemetry import cpu_description
from .dose import BIAS_TARGET
from .summary import summary_row

QUALITY_START = "<!-- quality-table:start -->"
QUALITY_END = "<!-- quality-table:end -->"
#: First line of a quality-table file that :func:`write_quality_table` creates.
QUALITY_TITLE = "# Results table (make quality)"
#: train.h5 attributes that would name the device (the train stage records backend and versions;
#: any of these, when a later version records one, is shown in place of the table host's CPU).
DEVICE_ATTRS = ("device", "device_name", "devices", "gpu", "gpu_name", "accelerator", "platform", "processor",
                "cpu", "cpu_count", "hostname")
QUALITY_HEADER = ("scenario", "preset", "nphotons", "amplitude bias", "amplitude r", "amplitude SSIM", "phase r",
                  "FRC px (amplitude)", "train s", "epochs run", "hardware / backend", "date (UTC)")


def quality_rows(results: str | Path, configfile: str | Path, preset: str,
                 scenarios: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per scenario for the results table of ``make quality``: the compare-stage metrics
    (comparison.json), nphotons (simulated.h5), training time, epochs and backend (train.h5).
    ``scenarios``: default the scenarios ``make quality`` builds: the default ones, then the
    dose sweep's points (the sweeps over nphotons; the reconstruction-mode and model-reuse
    sweeps are benchmark scenarios, built on request).
    Each scenario's simulate/ingest and train artifacts must carry the config hash of that
    scenario under ``preset`` (else the table would mislabel them): one-line ValueError if not."""
    from ..config import config_hash, default_scenarios, load_scenarios, load_yaml, stage_config, sweep_points

    raw = load_yaml(configfile)
    params = load_scenarios(configfile, preset)
    if scenarios is None:
        first = default_scenarios(raw, params)
        # then the sweeps' points; dose_1e09 is gs2_custom, listed once
        scenarios = first + [s for s, _ in sweep_points(raw, params, "nphotons") if s not in first]
    unknown = [s for s in scenarios if s not in params]
    if unknown:
        raise ValueError(f"quality-table: scenario(s) {unknown} not in {configfile}; expected names from {sorted(params)}")
    results = Path(results)
    rows = []
    for scen in scenarios:
        row = summary_row(results / scen / "comparison.json")
        attrs = {}
        for fname in ("simulated.h5", "train.h5"):
            path = results / scen / fname
            if not path.is_file():
                raise ArtifactError(not_a_file(path, f"expected the {fname[:-3]} artifact of {scen}"))
            attrs[fname] = read_attrs(path)
            stage = str(attrs[fname].get("stage"))
            want = config_hash(stage_config(params[scen], stage))
            if attrs[fname].get("config_hash") != want:
                raise ValueError(f"{path}: config_hash {attrs[fname].get('config_hash')} is not that of scenario "
                                 f"{scen} with preset {preset!r} in {configfile} ({want}): these results were made "
                                 f"with other parameters; re-run them (make quality PRESET={preset}) or pass the "
                                 "preset they were made with")
        sim, train = attrs["simulated.h5"], attrs["train.h5"]
        device = "; ".join(f"{k} {train[k]}" for k in DEVICE_ATTRS if k in train)
        backend = f"{train.get('backend', '?')} {train.get('backend_version', '')}".strip()
        # the rule's CPU threads say how a CPU run was limited; a GPU run does not use them
        dev = str(train.get("device") or "")
        accelerated = bool(train.get("gpu_name")) or (bool(dev) and not dev.startswith("cpu"))
        threads = 0 if accelerated else int(train.get("intra_op_threads") or 0)
        rows.append({**row, "preset": preset, "nphotons": sim.get("nphotons"),
                     "backend": f"{backend}, Keras {train.get('keras_version', '?')}"
                                + (f", {threads} thread{'s' if threads > 1 else ''}" if threads else ""),
                     "device": device or None, "date": str(train.get("created_utc", ""))[:10] or None})
    return rows


def _num(v: Any, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def quality_block(rows: Sequence[dict[str, Any]], results: str | Path, date: str) -> list[str]:
    """The Markdown lines written between the quality-table markers."""
    host = None if all(r["device"] for r in rows) else cpu_description()
    lines = [f"Written by `ptychopipe quality-table` on {date} from `{results}/` ({len(rows)} scenarios). "
             "Compare-stage numbers over the stitched test region, no rescaling; amplitude bias = "
             f"mean\\|Ô\\|/mean\\|O\\| (target {BIAS_TARGET[0]:g}–{BIAS_TARGET[1]:g}); FRC px = amplitude "
             "FRC resolution; date = when training finished.", "",
             "| " + " | ".join(QUALITY_HEADER) + " |", "|" + "---|" * len(QUALITY_HEADER)]
    for r in rows:
        hw = f"{r['device']}; {r['backend']}" if r["device"] else f"{host}\\*; {r['backend']}"
        cells = (r["scenario"], r["preset"], _num(r["nphotons"], ".0e"), _num(r["amplitude_bias"], ".3f"),
                 _num(r["amp_pearson_r"], ".3f"), _num(r["amp_ssim"], ".3f"), _num(r["phase_pearson_r"], ".3f"),
                 _num(r["amp_frc_resolution_px"], ".3g"), _num(r["train_seconds"], ".0f"),
                 _num(r["epochs_run"], "d"), hw, r["date"] or "n/a")
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if host:
        lines += ["", "\\* train.h5 names no device (it records the backend and versions only): this is the "
                      "machine that ran `ptychopipe quality-table` (platform.processor(), os.cpu_count()), "
                      "assumed to be the one that trained."]
    return lines


def replace_between_markers(text: str, block: Sequence[str], source: str) -> str:
    """``text`` with everything between the quality-table marker lines replaced by ``block``.
    Exactly one start and one end marker, start first, each on its own line; else ValueError."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.strip() == QUALITY_START]
    ends = [i for i, ln in enumerate(lines) if ln.strip() == QUALITY_END]
    stray = [ln for ln in lines if (QUALITY_START in ln or QUALITY_END in ln)
             and ln.strip() not in (QUALITY_START, QUALITY_END)]
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0] or stray:
        raise ValueError(f"{source}: expected one line {QUALITY_START} followed by one line {QUALITY_END}; found "
                         f"{len(starts)} start and {len(ends)} end marker line(s)"
                         + (", end before start" if len(starts) == len(ends) == 1 and starts[0] > ends[0] else "")
                         + (f", {len(stray)} marker(s) inside other text" if stray else ""))
    out = lines[:starts[0] + 1] + list(block) + lines[ends[0]:]
    return "\n".join(out) + "\n"


def write_quality_table(results: str | Path, out: str | Path, configfile: str | Path, preset: str,
                        scenarios: Sequence[str] | None = None, date: str | None = None) -> Path:
    """Replace the results table between the markers of ``out`` with one row per scenario
    (:func:`quality_rows`); idempotent. ``date``: default today (UTC). A missing ``out`` (for
    example results/report/quality_table.md after ``make clean``) is created with a title and
    the two markers; an existing one must hold them."""
    import datetime as dt

    out = Path(out)
    text = out.read_text() if out.is_file() else f"{QUALITY_TITLE}\n\n{QUALITY_START}\n{QUALITY_END}\n"
    replace_between_markers(text, [], str(out))  # marker problems before reading any result
    rows = quality_rows(results, configfile, preset, scenarios)
    date = date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    write_text_atomic(out, replace_between_markers(text, quality_block(rows, results, date), str(out)))
    return out


def copy_quality_table(table: str | Path, out: str | Path) -> Path:
    """Copy the block between the quality-table markers of ``table`` (the file ``make quality``
    writes, results/report/quality_table.md) between the markers of ``out`` (docs/results.md);
    the rest of ``out`` is untouched. Both files must hold one well-formed marker pair."""
    table, out = Path(table), Path(out)
    for path in (table, out):
        if not path.is_file():
            raise ArtifactError(f"{path}: file not found (expected a Markdown file with the quality-table markers)")
    src = table.read_text()
    replace_between_markers(src, [], str(table))
    lines = src.splitlines()
    block = lines[lines.index(next(ln for ln in lines if ln.strip() == QUALITY_START)) + 1:
                  lines.index(next(ln for ln in lines if ln.strip() == QUALITY_END))]
    text = out.read_text()
    replace_between_markers(text, [], str(out))
    write_text_atomic(out, replace_between_markers(text, block, str(out)))
    return out
