"""Throughput benchmark of the PINN: ``ptychopipe bench model`` (not a test). It measures
speed and counts operations on synthetic inputs, never the quality of a reconstruction: the
time a trained model takes to reach a quality is :mod:`.timetoquality`.

Measures, on the current machine and backend, training and inference samples per
second (a sample = one group of C = gridsize² patterns) of the PINN and of the bare
CNN (the same U-Net on the raw patterns: no group estimate, merge or far field), for
each gridsize, and estimates the
FLOPs per sample analytically:

- convolutions: 2·H_out·W_out·k²·C_in·C_out per Conv2D (multiply + add), from the
  built layers' shapes;
- FFTs: 5·M·log2(M) per complex FFT of M points (the radix-2 operation count; the
  backend's FFT of a non-power-of-two canvas costs somewhat more), plus the
  element-wise work of the forward model and of the merge (6 flops per complex
  multiply, 2 per complex add, 1 per cos or sin evaluation counted as one op);
- training ≈ 3 × forward (forward pass plus a backward pass of about twice its cost)
  of everything after the group estimate, which the train stage computes once per group
  and run (no weights) and which is reported separately.

Training is timed with the stage's own machinery (precomputed group estimates, head
model, GroupBatches, NaN guard, Adam, determinism as in the train stage) over ``steps``
batches after a warm-up epoch that absorbs tracing/compilation; inference with
``model.predict`` of the whole PINN (group estimate included) at the infer batch size.
Inputs are synthetic (random amplitudes, Poisson counts): throughput does not depend
on the values.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .. import solvers
from ..config import DifferenceMapOptions, GradientOptions, UNetOptions
from ..network import PoissonLoss, build_cnn, build_model, head_model, merge_canvas
from ..simulate import ideal_probe
from ..telemetry import cpu_model
from ..train import GroupArrays, GroupBatches, NonFiniteGuard, configure_backend, with_estimate


@dataclass(frozen=True)
class BenchRow:
    """One benchmark row. Rates in samples (groups) per second; FLOPs per sample."""

    model: str  # "pinn" | "cnn"
    gridsize: int
    train_samples_per_s: float
    infer_samples_per_s: float
    forward_flops: float
    train_flops: float
    conv_flops: float
    physics_flops: float
    parameters: int  # trainable
    train_cpu_s_per_sample: float  # CPU seconds (all threads of this process) per training sample
    infer_cpu_s_per_sample: float
    estimate_s_per_sample: float = 0.0  # once per group and training run: the group estimate (wall)
    estimate_cpu_s_per_sample: float = 0.0


def conv_flops(model: keras.Model, members: int = 1) -> float:
    """Σ 2·H_out·W_out·k_h·k_w·C_in·C_out over the Conv2D layers of a built model, per
    sample (group). The U-Net runs once per member (members are folded into the batch
    axis), so its per-row count is multiplied by ``members`` = C."""
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2.0 * h * w * kh * kw * cin * cout + h * w * cout  # MACs + bias
    return total * members


def _trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _fft(points: int) -> float:
    return 5.0 * points * math.log2(points)


def _merge_flops(n: int, c: int, canvas: int) -> float:
    """Forward FLOPs of one overlap merge (:func:`physics.merge_and_reextract`) per group."""
    nn, ss = n * n, canvas * canvas
    flops = 3 * c * nn  # weight·O, weight
    flops += 2 * c * _fft(ss)  # spectra of w·O and w
    flops += c * c * ss * (2 * 3 + 2)  # ramps: phase (3) and cos, sin per (target, source)
    flops += 2 * c * c * ss * (6 + 2)  # ramp × spectrum and sum over sources, num and den
    flops += 2 * c * _fft(ss)  # inverse FFTs of num and den
    flops += 7 * c * nn  # own-value fallback and division by Σw + eps
    return float(flops)


def estimate_transforms(n: int, gridsize: int, canvas: int, algorithm: str) -> dict[int, int]:
    """2-D FFTs (forward or inverse) of one iteration of the group estimate, per group, as
    {points per transform: number of transforms}. Both algorithms take the C members' far
    fields and back (2·C of N²); the gradient algorithm at C > 1 also crops the canvas into
    the members' frames (1 FFT + C inverse of S²) and places them back (C FFTs + 1 inverse).
    tests/test_bench.py counts the transforms :func:`solvers.group_estimate` runs."""
    c = gridsize * gridsize
    counts = {n * n: 2 * c}
    if algorithm == "gradient" and c > 1:
        counts[canvas * canvas] = counts.get(canvas * canvas, 0) + 2 * c + 2
    return counts


def estimate_flops(n: int, gridsize: int, canvas: int, iterations: int, algorithm: str) -> float:
    """Forward FLOPs of the group estimate (:func:`solvers.group_estimate`) per group, for
    ``algorithm`` "gradient" or "difference_map"."""
    c = gridsize * gridsize
    nn, ss = n * n, canvas * canvas
    if algorithm not in solvers.ESTIMATE_ALGORITHMS:
        raise ValueError(f"algorithm: expected one of {list(solvers.ESTIMATE_ALGORITHMS)}, got {algorithm!r}")
    per = sum(k * _fft(points) for points, k in estimate_transforms(n, gridsize, canvas, algorithm).items())
    if algorithm == "difference_map":  # no canvas FFTs in the loop: integer windows (gather, scatter-add)
        per += c * (12 * nn + 6 * nn * 2 + 8 * nn)  # projection, P·x and
        per += 4 * (canvas if c > 1 else n) ** 2  # conj(P)·ψ, 2φ − ψ and the update; overlap quotient
        once = (1 + c) * _fft(ss) + c * ss * 6 if c > 1 else 0  # final sub-pixel crop
        return float(per * iterations + once)
    per += c * (6 * nn * 2 + 12 * nn)  # P·x, conj(P)·Δ, modulus projection
    if c > 1:
        per += 2 * c * ss * 6  # the crop's and the place's shift ramps
    per += 12 * (canvas if c > 1 else n) ** 2  # momentum update
    return float(per * iterations)


def physics_flops(n: int, gridsize: int, canvas: int, iterations: int, algorithm: str) -> float:
    """Analytic forward FLOPs of the physics layers per group (see module docstring): the
    group estimate (``iterations`` steps of ``algorithm``) plus the forward model (and its
    merge, C > 1)."""
    c = gridsize * gridsize
    nn = n * n
    flops = estimate_flops(n, gridsize, canvas, iterations, algorithm)
    flops += c * (nn * 2 + nn * 2 + 8 * nn)  # refine: |E|, arg E, amp·(cos φ, sin φ)
    flops += c * (6 * nn + _fft(nn) + 3 * nn)  # P·O, FFT, |F|²
    if c > 1:
        flops += _merge_flops(n, c, canvas)  # overlap constraint
        flops += c * nn * 4  # merged amplitude/phase outputs
    return float(flops)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _epoch(model: keras.Model, batches: keras.utils.PyDataset, callbacks: list) -> tuple[float, float]:
    """(wall s, CPU s of this process) per step of one training epoch."""
    t0, c0 = time.perf_counter(), _cpu_seconds()
    model.fit(batches, epochs=1, verbose=0, callbacks=callbacks)
    return (time.perf_counter() - t0) / len(batches), (_cpu_seconds() - c0) / len(batches)


def _predict(model: keras.Model, x: Any, batch_size: int) -> tuple[float, float]:
    """(wall s, CPU s) per sample of ``model.predict``."""
    n = len(x["diffraction"]) if isinstance(x, dict) else len(x)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    model.predict(x, batch_size=batch_size, verbose=0)
    return (time.perf_counter() - t0) / n, (_cpu_seconds() - c0) / n


class _CnnBatches(keras.utils.PyDataset):
    """Batches for the bare CNN: inputs → {"amplitude": 1, "phase": 0} targets (MSE)."""

    def __init__(self, inputs: np.ndarray, batch_size: int, steps: int) -> None:
        super().__init__()
        self.inputs, self.batch_size, self.steps = inputs, batch_size, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int):
        x = self.inputs[i * self.batch_size:(i + 1) * self.batch_size]
        return x, {"amplitude": np.ones_like(x), "phase": np.zeros_like(x)}


def bench_model(n: int = 64, estimate: DifferenceMapOptions | GradientOptions = DifferenceMapOptions(),
                unet: UNetOptions = UNetOptions(), gridsizes: tuple[int, ...] = (1, 2),
                batch_size: int = 16, infer_batch_size: int = 64, steps: int = 10, repeats: int = 3,
                max_offset: float = 14.0, deterministic: bool = True, seed: int = 0) -> list[BenchRow]:
    """Benchmark the PINN (a fixed group estimate of ``estimate``'s algorithm and iterations,
    corrected by the U-Net of ``unet``) and the bare CNN of the same U-Net for each gridsize
    (see module docstring).

    After a warm-up (tracing/compilation) of every model, PINN and CNN epochs of ``steps``
    steps, and their predictions, are timed alternately ``repeats`` times and the best
    of each is kept: on a shared machine the best run is the least disturbed, and the
    alternation exposes both models to the same background load.
    """
    configure_backend(deterministic)
    rng = np.random.default_rng(seed)
    rows: list[BenchRow] = []
    probe = ideal_probe(n, n / 2) * 1e3
    for gs in gridsizes:
        c = gs * gs
        canvas = merge_canvas(n, max_offset) if c > 1 else n
        m = max(batch_size * steps, infer_batch_size * 2)
        counts = rng.poisson(50.0, (m, n, n, c)).astype(np.float32)
        offsets = (rng.uniform(-max_offset, max_offset, (m, c, 2)) if c > 1 else np.zeros((m, 1, 2)))
        input_scale = 0.05
        data = GroupArrays(np.sqrt(counts) * input_scale, offsets.astype(np.float32), counts)
        keras.utils.set_random_seed(seed)
        pinn = build_model(n, gs, probe, 1.0, canvas, estimate, unet, input_scale=input_scale)
        trainer = head_model(pinn)  # as the train stage: steps on precomputed group estimates
        trainer.compile(optimizer=keras.optimizers.Adam(1e-4), loss=PoissonLoss(50.0 * n * n))
        train_set = GroupArrays(data.inputs[:batch_size * steps], data.offsets[:batch_size * steps],
                                data.counts[:batch_size * steps])
        with_estimate(train_set.subset(np.arange(min(len(train_set), infer_batch_size))), pinn, infer_batch_size)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        train_set = with_estimate(train_set, pinn, infer_batch_size)
        est_wall, est_cpu = ((time.perf_counter() - t0) / len(train_set), (_cpu_seconds() - c0) / len(train_set))
        pinn_batches = GroupBatches(train_set, batch_size, seed=0)
        pinn_cb = [NonFiniteGuard(pinn_batches)]
        keras.utils.set_random_seed(seed)
        cnn = build_cnn(n, gs, unet.filters, unet.depth, unet.phase_max_rad, 1.0)
        cnn.compile(optimizer=keras.optimizers.Adam(1e-4), loss={"amplitude": "mse", "phase": "mse"})
        cnn_batches = _CnnBatches(data.inputs, batch_size, steps)
        cnn_cb = [NonFiniteGuard()]
        # warm-up: trace/compile train and predict functions of both
        trainer.fit(pinn_batches, epochs=1, steps_per_epoch=min(2, steps), verbose=0, callbacks=pinn_cb)
        cnn.fit(cnn_batches, epochs=1, steps_per_epoch=min(2, steps), verbose=0, callbacks=cnn_cb)
        pinn.predict(data.x(slice(0, infer_batch_size)), batch_size=infer_batch_size, verbose=0)
        cnn.predict(data.inputs[:infer_batch_size], batch_size=infer_batch_size, verbose=0)
        best = {k: (float("inf"), float("inf")) for k in ("pt", "ct", "pi", "ci")}
        for _ in range(repeats):
            for key, fn in (("pt", lambda: _epoch(trainer, pinn_batches, pinn_cb)),
                            ("ct", lambda: _epoch(cnn, cnn_batches, cnn_cb)),
                            ("pi", lambda: _predict(pinn, data.x(), infer_batch_size)),
                            ("ci", lambda: _predict(cnn, data.inputs, infer_batch_size))):
                wall, cpu = fn()
                best[key] = (min(best[key][0], wall), min(best[key][1], cpu))
        cc = conv_flops(cnn, c)
        cf, pf = conv_flops(pinn, c), physics_flops(n, gs, canvas, estimate.iterations, estimate.algorithm)
        ef = estimate_flops(n, gs, canvas, estimate.iterations, estimate.algorithm)
        rows.append(BenchRow("pinn", gs, batch_size / best["pt"][0], 1.0 / best["pi"][0], cf + pf,
                             3 * (cf + pf - ef), cf, pf, _trainable(pinn), best["pt"][1] / batch_size, best["pi"][1],
                             est_wall, est_cpu))
        rows.append(BenchRow("cnn", gs, batch_size / best["ct"][0], 1.0 / best["ci"][0], cc, 3 * cc, cc, 0.0,
                             _trainable(cnn), best["ct"][1] / batch_size, best["ci"][1]))
    return rows


def machine_info() -> dict[str, Any]:
    """Backend, versions, CPU and thread settings of this run."""
    info = {"backend": keras.backend.backend(), "keras": keras.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "threads": os.environ.get("TF_NUM_INTRAOP_THREADS", "default")}
    info["cpu"] = cpu_model()
    if info["backend"] == "tensorflow":
        import tensorflow as tf

        info["devices"] = [d.device_type for d in tf.config.list_physical_devices()]
    elif info["backend"] == "jax":
        import jax

        info["devices"] = sorted({f"{d.platform}: {d.device_kind}" for d in jax.devices()})
    return info


def markdown(rows: list[BenchRow], settings: dict[str, Any], info: dict[str, Any]) -> str:
    """The results as a markdown table plus the derived ratios."""
    lines = [f"Backend {info['backend']} (Keras {info['keras']}), devices {info.get('devices')}, "
             f"CPU {info.get('cpu', '?')} ({info['cpus']} cores visible, threads {info['threads']}); "
             + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".",
             "",
             "| model | gridsize | trainable params | train samples/s | infer samples/s | infer/train | "
             "train CPU-ms/sample | infer CPU-ms/sample | forward GFLOP/sample | of which physics | "
             "train GFLOP/s achieved | group estimate CPU-ms/sample (once per training run) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.gridsize} | {r.parameters} | {r.train_samples_per_s:.1f} | "
                     f"{r.infer_samples_per_s:.1f} | {r.infer_samples_per_s / r.train_samples_per_s:.1f}x | "
                     f"{1e3 * r.train_cpu_s_per_sample:.1f} | {1e3 * r.infer_cpu_s_per_sample:.1f} | "
                     f"{r.forward_flops / 1e9:.3f} | {r.physics_flops / max(r.forward_flops, 1):.1%} | "
                     f"{r.train_flops * r.train_samples_per_s / 1e9:.1f} | "
                     f"{1e3 * r.estimate_cpu_s_per_sample:.1f} |")
    lines.append("")
    for gs in sorted({r.gridsize for r in rows}):
        p = next(r for r in rows if r.model == "pinn" and r.gridsize == gs)
        c = next(r for r in rows if r.model == "cnn" and r.gridsize == gs)
        wall = 1.0 - p.train_samples_per_s / c.train_samples_per_s
        cpu = 1.0 - c.train_cpu_s_per_sample / p.train_cpu_s_per_sample
        lines.append(f"- gridsize {gs}: physics layers take {wall:.0%} (wall) / {cpu:.0%} (CPU time) of a PINN "
                     f"training step (1 - CNN/PINN time per sample); PINN inference is "
                     f"{p.infer_samples_per_s / p.train_samples_per_s:.1f}x its training throughput.")
    return "\n".join(lines) + "\n"


def run_cli(configfile: str, preset: str, gridsizes: tuple[int, ...], steps: int, json_out: str | None,
            deterministic: bool, infer_batch_size: int | None = None) -> str:
    """``ptychopipe bench model``: model sizes from ``configfile``'s preset (first scenario's
    N, model.*, train.batch_size, infer.batch_size; ``infer_batch_size`` overrides the last).
    Returns the markdown; writes JSON if asked."""
    from ..config import load_scenarios, stage_config, to_dict

    params = next(iter(load_scenarios(configfile, preset).values()))
    train = stage_config(params, "train")
    if train.model.unet is None:
        raise ValueError(f"{configfile}: preset {preset}: the first scenario's model has no U-Net "
                         f"(estimate_algorithm {train.model.estimate.algorithm}); expected difference_map or gradient")
    settings = {"preset": preset, "N": train.model.N, "batch_size": train.batch_size,
                "infer_batch_size": infer_batch_size or params["infer"]["batch_size"], "steps": steps,
                "unet": to_dict(train.model.unet), "estimate": to_dict(train.model.estimate),
                "deterministic": deterministic}
    rows = bench_model(n=train.model.N, estimate=train.model.estimate, unet=train.model.unet, gridsizes=gridsizes,
                       batch_size=train.batch_size, infer_batch_size=settings["infer_batch_size"], steps=steps,
                       deterministic=deterministic)
    info = machine_info()
    text = markdown(rows, settings, info)
    if json_out:
        from ..artifacts import write_json_atomic

        write_json_atomic(Path(json_out), {"settings": settings, "machine": info, "rows": [asdict(r) for r in rows]})
    return text


__all__ = ["BenchRow", "bench_model", "conv_flops", "estimate_flops", "estimate_transforms", "physics_flops", "markdown", "machine_info", "run_cli"]
