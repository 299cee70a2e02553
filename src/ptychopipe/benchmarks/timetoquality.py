"""Time to quality: the trained network against the iterative reference, side by side, on
a preset's artifacts. The speed of the network alone, on synthetic inputs, is
:mod:`.throughput`; the pty-chi reconstruction itself is :mod:`ptychopipe.baseline`'s.

``ptychopipe bench time-to-quality`` reconstructs the *same* test patterns of each
scenario, in one process on one machine with the same thread count, with

- the pipeline: each reconstruction mode of the scenario's trained model
  (``network``: the whole model, i.e. the group estimate of ``model.estimate_iterations``
  physics iterations followed by the learned correction; ``estimate_only``: the same
  physics iterations without the learned correction, which shows what the training
  adds), each followed by the scenario's stitch. Training is not timed: the model is
  trained once and then reconstructs new data. The first batch is predicted once
  before timing (graph tracing and compilation happen once per process);
- pty-chi LSQML from the flat start ā (the ``baseline`` stage's conventions), once
  with its Gaussian and once with its Poisson noise model, one epoch at a time; and,
  with ``--starts flat reconstruction``, also started from the network's stitched
  reconstruction (its time then includes the network's).

Every reconstruction is scored by :func:`ptychopipe.evaluation.evaluate` on the same
pixels: the stitched canvas of the test positions and the network's coverage mask.
Scoring is not timed. CPU seconds are the process's user + system time over all
threads (``resource.getrusage``), wall seconds a monotonic clock.

``speedup`` of a pipeline row = the CPU seconds pty-chi (flat start, the faster of its
two noise models) needs to first reach that row's amplitude Pearson r, divided by the
row's CPU seconds; ``inf`` where pty-chi never reaches it within the epochs run.

Outputs in ``--out``: ``time_to_quality.csv`` (one row per pipeline mode and per
pty-chi epoch, columns :data:`COLUMNS`), ``time_to_quality.md`` (summary tables) and
``time_to_quality.png`` (amplitude r against CPU seconds, both methods on one plot per
scenario).
"""

from __future__ import annotations

import csv
import io
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..artifacts import Normalized, Simulated, read_attrs, save_figure, write_text_atomic
from ..config import BaselineConfig, CompareConfig, ModelConfig, config_hash, from_json, load_scenarios, stage_config
from ..errors import PtychopipeError

#: Columns of time_to_quality.csv, in order.
COLUMNS = ("scenario", "nphotons", "method", "mode", "start", "epoch", "cpu_seconds", "wall_seconds", "amp_r",
           "phase_r", "amp_ssim", "bias", "phase_scale", "speedup", "threads", "device")
#: Amplitude Pearson r at which the refinement starts are compared (time to reach it).
REFINE_TARGET_R = 0.99
NOISE_MODELS = ("gaussian", "poisson")
STARTS = ("flat", "reconstruction")


class BenchError(PtychopipeError, ValueError):
    """A benchmark input is missing or does not belong to the requested preset."""


@dataclass(frozen=True)
class Inputs:
    """One scenario's artifacts and merged parameters."""

    scenario: str
    params: Mapping[str, Any]
    simulated: Path
    grouped: Path
    normalized: Path
    model: Path
    train: Path
    model_from: str  # the scenario that trained ``model`` (the scenario itself unless infer.model_from)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Clock:
    """CPU and wall seconds of a block: ``with Clock() as c: ...; c.cpu, c.wall``."""

    def __enter__(self) -> "Clock":
        self._cpu, self._wall = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cpu, self.wall = cpu_seconds() - self._cpu, time.perf_counter() - self._wall


# --------------------------------------------------------------------------- inputs


def scenario_inputs(results: str | Path, configfile: str | Path, preset: str, scenarios: Sequence[str]) -> list[Inputs]:
    """The artifacts of each scenario under ``results``; one-line error when a scenario is
    unknown, or an artifact is missing or was made with other parameters than ``preset``'s
    (config hash of grouped.h5 and train.h5 against the preset's stage configs)."""
    params = load_scenarios(configfile, preset)
    out = []
    for s in scenarios:
        if s not in params:
            raise BenchError(f"{configfile}: scenario {s!r}: not defined; expected one of {', '.join(sorted(params))}")
        d = Path(results) / s
        src = params[s]["infer"]["model_from"] or s  # the scenario whose model reconstructs this one
        if src not in params:
            raise BenchError(f"{configfile}: scenario {s!r}: infer.model_from {src!r} is not defined")
        m = Path(results) / src
        inp = Inputs(s, params[s], d / "simulated.h5", d / "grouped.h5", d / "normalized.h5", m / "model.keras",
                     m / "train.h5", src)
        for path in (inp.simulated, inp.grouped, inp.normalized, inp.model, inp.train):
            if not path.is_file():
                raise BenchError(f"{path}: not found; expected the {preset} pipeline's artifact (build it with "
                                 f"`snakemake results/{s}/inferred.h5 --config preset={preset}`, or drop --no-build)")
        for path, stage, owner in ((inp.grouped, "group", s), (inp.train, "train", src)):
            want = config_hash(stage_config(params[owner], stage))
            got = read_attrs(path).get("config_hash")
            if got != want:
                raise BenchError(f"{path}: config_hash: expected {want} (preset {preset}), got {got}: made with other "
                                 f"parameters; rebuild with `snakemake results/{s}/inferred.h5 --config preset={preset}`")
        out.append(inp)
    return out


def build_artifacts(preset: str, scenarios: Sequence[str], cores: int, snakefile: str | Path | None = None) -> None:
    """Bring each scenario's data and model (its own, or the one ``infer.model_from`` names) up
    to date with Snakemake in the current directory (nothing runs when they already are)."""
    targets = [f"results/{s}/normalized.h5" for s in scenarios] + [f"results/{s}/inferred.h5" for s in scenarios]
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), *targets, "--config", f"preset={preset}"]
    if snakefile is not None:
        cmd[3:3] = ["-s", str(snakefile)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = [ln for ln in res.stderr.splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise BenchError(f"snakemake {' '.join(targets)} --config preset={preset}: failed (exit "
                         f"{res.returncode}): {tail[0]}")


def device_names() -> dict[str, str]:
    """What each side computes on: {"network": "tensorflow cpu" | "jax gpu: H100 ...",
    "pty-chi": "torch cpu" | "torch cuda: ..."}."""
    import keras

    from ..train import configure_backend

    info = configure_backend(deterministic=False)
    out = {"network": f"{keras.backend.backend()} {info.get('device', 'cpu')}"}
    try:
        import torch

        out["pty-chi"] = (f"torch cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                          else "torch cpu")
    except ImportError:
        out["pty-chi"] = "unavailable"
    return out


# --------------------------------------------------------------------------- scoring


@dataclass
class Scorer:
    """Scores objects on one scenario's stitched canvas with the network's coverage mask."""

    truth: np.ndarray
    coverage: np.ndarray
    origin_x: int
    origin_y: int
    cfg: CompareConfig

    def score(self, obj: np.ndarray) -> dict[str, float]:
        """{"amp_r", "phase_r", "amp_ssim", "bias", "phase_scale"} of ``obj`` (canvas-shaped)."""
        from ..evaluation import evaluate

        ev = evaluate(obj, self.coverage, self.truth, self.origin_x, self.origin_y, self.cfg)
        a, p = ev.metrics["amplitude"], ev.metrics["phase"]
        return {"amp_r": float(a["pearson_r"]), "phase_r": float(p["pearson_r"]), "amp_ssim": float(a["ssim"]),
                "bias": float(ev.amplitude_bias), "phase_scale": float(p["ls_scale"])}


# --------------------------------------------------------------------------- the pipeline


def stitch_groups(amplitude: np.ndarray, phase: np.ndarray, positions: np.ndarray, probe: np.ndarray,
                  cfg: Any) -> Any:
    """Stitch predicted patches as the stitch stage does (weight, twin resolution).

    amplitude, phase: (B, C, N, N) [object amplitude], [rad]; positions (B, C, 2) [x, y] px.
    Returns :class:`ptychopipe.stitch.Stitched`."""
    from ..stitch import patch_weight, resolve_twins, stitch_patches

    b, c, n, _ = amplitude.shape
    patches = (amplitude.astype(np.float64) * np.exp(1j * phase.astype(np.float64))).reshape(b * c, n, n)
    pos = positions.reshape(b * c, 2).astype(np.float64)
    weight = patch_weight(cfg.weight, probe, n)
    if cfg.resolve_twin and c == 1:
        return resolve_twins(patches, pos, weight, probe)[1]
    return stitch_patches(patches, pos, weight)


def pipeline_modes(model: Any) -> dict[str, Any]:
    """The reconstruction modes of a trained model ("network"; with a U-Net correction also
    "estimate_only", its fixed-physics estimate alone): name -> a function (diffraction (B,N,N,C),
    offsets (B,C,2), batch size) → (amplitude, phase), each (B, C, N, N) float32."""
    from ..network import estimate_model, model_amplitude_estimate

    est = estimate_model(model)
    abar = model_amplitude_estimate(model)
    learned_correction = any(layer.name == "refine_estimate" for layer in model.layers)

    def network(x: np.ndarray, off: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        out = model.predict({"diffraction": x, "offsets": off}, batch_size=batch, verbose=0)
        return np.moveaxis(out["amplitude"], -1, 1), np.moveaxis(out["phase"], -1, 1)

    def estimate_only(x: np.ndarray, off: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        e = est.predict({"diffraction": x, "offsets": off}, batch_size=batch, verbose=0)
        z = np.moveaxis(e[..., 0] + 1j * e[..., 1], -1, 1)
        return (abar * np.abs(z)).astype(np.float32), np.angle(z).astype(np.float32)

    # a model whose learning is all in its estimate (unrolled) has one mode
    return {"network": network, "estimate_only": estimate_only} if learned_correction else {"network": network}


def model_options(inp: Inputs) -> ModelConfig:
    """The model options of the scenario that trained ``inp``'s model (train.h5's config)."""
    return from_json("train", read_attrs(inp.train)["config_json"]).model


def mode_label(model: ModelConfig, mode: str) -> str:
    """Human label of a pipeline mode, e.g. "difference_map x10 + U-Net + network"."""
    e = model.estimate
    if model.unet is None:
        return f"{e.algorithm} x{e.iterations} (learned) + network"
    base = f"{e.algorithm} x{e.iterations}"
    return f"{base} + U-Net + network" if mode == "network" else f"{base}, no network"


def run_pipeline(inp: Inputs, batch_size: int | None = None) -> tuple[list[dict[str, Any]], Scorer, Any]:
    """Reconstruct the test groups with every mode of the scenario's model; returns (rows,
    the scenario's scorer, the network mode's stitched canvas)."""
    from ..infer import check_model, data_scales, load_model

    norm = Normalized.read(inp.normalized)
    model = load_model(inp.model)
    foreign = inp.model_from != inp.scenario
    check_model(model, norm, inp.model, inp.normalized, foreign=foreign)
    amp_scale = data_scales(model, norm)[0] if foreign else 1.0
    g = norm.sets["test"]
    x, off = g.amplitude.astype(np.float32), g.offsets.astype(np.float32)
    positions = g.centres[:, None, :].astype(np.float64) + g.offsets.astype(np.float64)
    stitch_cfg = stage_config(inp.params, "stitch")
    batch = int(batch_size or inp.params["infer"]["batch_size"])
    truth = Simulated.read_truth(inp.simulated)
    if truth is None:
        raise BenchError(f"{inp.simulated}: object: missing; time to quality needs the true object (simulated data)")
    rows, scorer, network_canvas = [], None, None
    options = model_options(inp)  # the model's own settings (another scenario's with infer.model_from)
    for mode, fn in pipeline_modes(model).items():
        fn(x[:batch], off[:batch], batch)  # tracing / compilation, once per process
        with Clock() as clock:
            amp, phase = fn(x, off, batch)
            st = stitch_groups(amp * amp_scale, phase, positions, norm.probe, stitch_cfg)
        if scorer is None:
            geo = st.geometry
            scorer = Scorer(truth, st.coverage, geo.origin_x, geo.origin_y, stage_config(inp.params, "compare"))
        if mode == "network":
            network_canvas = SimpleNamespace(object=st.object, coverage=st.coverage, origin_x=st.geometry.origin_x,
                                             origin_y=st.geometry.origin_y)
        rows.append({"scenario": inp.scenario, "method": "pipeline",
                     "mode": mode_label(options, mode) + (f" (model of {inp.model_from})" if foreign else ""),
                     "start": "", "epoch": "", "cpu_seconds": clock.cpu, "wall_seconds": clock.wall,
                     **scorer.score(st.object)})
    return rows, scorer, network_canvas


# --------------------------------------------------------------------------- pty-chi


def run_ptychi(inp: Inputs, scorer: Scorer, noise_model: str, epochs: int, start: str, network_canvas: Any,
               offset: tuple[float, float] = (0.0, 0.0), batch_size: int | None = None,
               device: str = "cpu") -> list[dict[str, Any]]:
    """pty-chi LSQML on the scenario's unique test patterns, scored after every epoch.

    ``start`` "flat" or "reconstruction" (``network_canvas``); ``offset`` (cpu, wall)
    seconds added to every row (the network's own time for the reconstruction start)."""
    from ..baseline import build_task, import_ptychi, initial_object, object_buffer, on_canvas, task_object
    from ..stages.baseline import read_test_patterns
    from ..stitch import CanvasGeometry

    torch, api, _ = import_ptychi()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    _, counts, positions, probe = read_test_patterns(inp.simulated, inp.grouped)
    n = probe.shape[0]
    buf = object_buffer(positions, n)
    b = inp.params["baseline"]
    cfg = BaselineConfig(engine="lsqml", epochs=epochs, batch_size=int(batch_size or b["batch_size"]), snapshots=1,
                         seed=int(b["seed"]), noise_model=noise_model, initial=start)
    initial = initial_object(start, counts, probe, buf, network_canvas if start == "reconstruction" else None)
    task = build_task(api, cfg, counts, probe, positions, initial, buf, device=device)
    h, w = scorer.coverage.shape
    geo = CanvasGeometry(scorer.origin_x, scorer.origin_y, h, w)
    rows, cpu, wall = [], offset[0], offset[1]
    for epoch in range(1, epochs + 1):
        with Clock() as clock:
            task.run(n_epochs=1)
        cpu, wall = cpu + clock.cpu, wall + clock.wall
        obj = task_object(task)
        if not np.all(np.isfinite(obj)):
            raise BenchError(f"pty-chi lsqml ({noise_model}) on {inp.scenario}: object non-finite after epoch {epoch}")
        rows.append({"scenario": inp.scenario, "method": "pty-chi", "mode": f"lsqml {noise_model}", "start": start,
                     "epoch": epoch, "cpu_seconds": cpu, "wall_seconds": wall,
                     **scorer.score(on_canvas(obj, buf, geo))})
    return rows


# --------------------------------------------------------------------------- speedup and outputs


def first_time(rows: Iterable[Mapping[str, Any]], r: float) -> float:
    """CPU seconds of the first row (in epoch order) whose amplitude r ≥ ``r``; inf if none."""
    hits = [row["cpu_seconds"] for row in rows if row["amp_r"] >= r]
    return float(min(hits)) if hits else math.inf


def reference_time(rows: Sequence[Mapping[str, Any]], scenario: str, r: float) -> float:
    """pty-chi's CPU seconds (flat start, the faster noise model) to first reach amplitude r
    ``r`` on ``scenario``'s patterns; inf if never, NaN if pty-chi did not run for it."""
    ref = [q for q in rows if q["method"] == "pty-chi" and q["scenario"] == scenario and q["start"] == "flat"]
    return min((first_time([q for q in ref if q["mode"] == m], r) for m in {q["mode"] for q in ref}),
               default=math.nan)


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Set ``speedup`` on every pipeline row (module docstring); "" on the others."""
    for row in rows:
        row["speedup"] = ""
        if row["method"] != "pipeline":
            continue
        t = reference_time(rows, row["scenario"], row["amp_r"])
        if not math.isnan(t):
            row["speedup"] = t / row["cpu_seconds"] if row["cpu_seconds"] > 0 else math.inf


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """time_to_quality.csv: :data:`COLUMNS`, floats to 6 significant digits, "inf" as such."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in rows:
        w.writerow([_fmt(row.get(k), 6) if isinstance(row.get(k), float) else row.get(k, "") for k in COLUMNS])
    write_text_atomic(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a time_to_quality.csv as strings (for reports and tests)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def markdown(rows: Sequence[Mapping[str, Any]], header: Mapping[str, str]) -> str:
    """The summary tables: per scenario and pipeline mode, and pty-chi's best and time to r 0.99."""
    out = ["# Time to quality", ""]
    out += [f"- {k}: {v}" for k, v in header.items()] + [""]
    out += ["## The pipeline's modes against pty-chi (flat start)", "",
            "| scenario | photons | mode | CPU s | wall s | amp r | phase r | amp SSIM | bias | phase scale "
            "| pty-chi CPU s to this r | speedup |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["method"] != "pipeline":
            continue
        t = reference_time(rows, row["scenario"], row["amp_r"])
        out.append(f"| {row['scenario']} | {_fmt(row['nphotons'], 3)} | {row['mode']} | {_fmt(row['cpu_seconds'], 3)} "
                   f"| {_fmt(row['wall_seconds'], 3)} | {row['amp_r']:.4f} | {row['phase_r']:.4f} "
                   f"| {row['amp_ssim']:.4f} | {row['bias']:.4f} | {row['phase_scale']:.3f} | {_fmt(t, 3)} "
                   f"| {_fmt(row['speedup'], 3)} |")
    out += ["", "## pty-chi: best amplitude r, and CPU seconds to amplitude r "
            f"{REFINE_TARGET_R} from each start", "",
            "| scenario | mode | start | epochs | best amp r (epoch) | phase r there | CPU s to r "
            f"{REFINE_TARGET_R} |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["scenario"], r["mode"], r["start"]) for r in rows if r["method"] == "pty-chi"},
                  key=lambda k: ([r["scenario"] for r in rows].index(k[0]), k[1], k[2]))
    for s, m, st in keys:
        run = [r for r in rows if r["method"] == "pty-chi" and (r["scenario"], r["mode"], r["start"]) == (s, m, st)]
        best = max(run, key=lambda r: r["amp_r"])
        out.append(f"| {s} | {m} | {st} | {len(run)} | {best['amp_r']:.4f} ({best['epoch']}) | {best['phase_r']:.4f} "
                   f"| {_fmt(first_time(run, REFINE_TARGET_R), 3)} |")
    out += ["", "CPU s of a reconstruction start include the network's own inference and stitch.", ""]
    return "\n".join(out)


def plot(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Amplitude r against CPU seconds: pty-chi curves and pipeline points, one panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    cols = min(3, len(scenarios))
    nrows = math.ceil(len(scenarios) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.2 * nrows), squeeze=False)
    for ax in axes.ravel()[len(scenarios):]:
        ax.set_visible(False)
    for ax, s in zip(axes.ravel(), scenarios):
        mine = [r for r in rows if r["scenario"] == s]
        for key in sorted({(r["mode"], r["start"]) for r in mine if r["method"] == "pty-chi"}):
            run = [r for r in mine if r["method"] == "pty-chi" and (r["mode"], r["start"]) == key]
            ax.plot([r["cpu_seconds"] for r in run], [r["amp_r"] for r in run], "-o", ms=2.5,
                    label=f"pty-chi {key[0]} ({key[1]} start)")
        for r in mine:
            if r["method"] == "pipeline":
                ax.plot([r["cpu_seconds"]], [r["amp_r"]], "*", ms=11, label=f"pipeline: {r['mode']}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("CPU seconds")
        ax.set_ylabel("amplitude Pearson r")
        ax.set_title(s)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------- command


def run(preset: str, scenarios: Sequence[str], out: str | Path, *, threads: int = 1, epochs: int = 20,
        results: str | Path = "results", configfile: str | Path = "config/scenarios.yaml", build: bool = True,
        starts: Sequence[str] = ("flat",), noise_models: Sequence[str] = NOISE_MODELS,
        log: Any = print) -> list[dict[str, Any]]:
    """The benchmark (module docstring). Returns the rows written to ``out``/time_to_quality.csv."""
    from ..baseline import available

    ok, why = available()
    if not ok:
        raise BenchError(f"time to quality needs the optional pty-chi extra: {why}")
    bad = [s for s in starts if s not in STARTS] + [m for m in noise_models if m not in NOISE_MODELS]
    if bad or epochs < 1:
        raise BenchError(f"starts/noise models/epochs: expected starts in {STARTS}, noise models in {NOISE_MODELS}, "
                         f"epochs >= 1; got {list(starts)}, {list(noise_models)}, {epochs}")
    if build:
        build_artifacts(preset, scenarios, threads)
    inputs = scenario_inputs(results, configfile, preset, scenarios)
    devices = device_names()
    gpu = "gpu" if devices["pty-chi"].startswith("torch cuda") else "cpu"
    rows: list[dict[str, Any]] = []
    done: dict[tuple, str] = {}  # same data, stitch and scoring -> the scenario whose pty-chi runs serve
    for inp in inputs:
        pipe, scorer, canvas = run_pipeline(inp)
        for r in pipe:
            log(f"[time-to-quality] {inp.scenario} pipeline {r['mode']}: amp r {r['amp_r']:.4f}, "
                f"{r['cpu_seconds']:.2f} CPU s ({r['wall_seconds']:.2f} s wall)")
        net = pipe[0]  # the "network" mode comes first
        rows += [{**r, "device": devices["network"]} for r in pipe]
        key = tuple(config_hash(stage_config(inp.params, st)) for st in ("simulate", "group", "stitch", "compare"))
        if key in done:  # another mode of the same data: pty-chi's flat-start runs are the same reconstruction
            rows += [{**r, "scenario": inp.scenario} for r in rows
                     if r["method"] == "pty-chi" and r["scenario"] == done[key] and r["start"] == "flat"]
        for start in starts:
            if key in done and start == "flat":
                continue
            for nm in noise_models:
                off = (net["cpu_seconds"], net["wall_seconds"]) if start == "reconstruction" else (0.0, 0.0)
                run_rows = run_ptychi(inp, scorer, nm, epochs, start, canvas, off, device=gpu)
                best = max(run_rows, key=lambda r: r["amp_r"])
                log(f"[time-to-quality] {inp.scenario} pty-chi lsqml {nm} ({start} start): best amp r "
                    f"{best['amp_r']:.4f} at epoch {best['epoch']} ({best['cpu_seconds']:.2f} CPU s)")
                rows += [{**r, "device": devices["pty-chi"]} for r in run_rows]
        done.setdefault(key, inp.scenario)
    for r in rows:
        r["nphotons"] = float(next(i.params for i in inputs if i.scenario == r["scenario"])["nphotons"])
        r["threads"] = threads
    add_speedups(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .. import __version__

    header = {"command": " ".join(["ptychopipe bench time-to-quality", "--preset", preset, "--scenarios",
                                   *scenarios, "--threads", str(threads), "--epochs", str(epochs)]),
              "network device": devices["network"], "pty-chi device": devices["pty-chi"],
              "threads (both)": str(threads), "ptychopipe": __version__,
              "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    write_csv(rows, out / "time_to_quality.csv")
    write_text_atomic(out / "time_to_quality.md", markdown(rows, header))
    plot(rows, out / "time_to_quality.png")
    return rows
