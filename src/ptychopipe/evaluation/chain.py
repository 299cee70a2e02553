"""The stage-ratio chain, the NaN status and the training summary.

:func:`chain_entries` follows the mean amplitude from the raw data to the truth through the
artifacts' telemetry, and :func:`ratio_chain` names the first stage that departs from its
contract. Its last link, ``phase``, is the phase contrast kept (the phase's least-squares
scale against the truth), so a reconstruction whose phase is compressed is flagged even
where its phase r is high. :func:`nan_status` gathers what is not finite anywhere, and
:func:`training_summary` the train stage's figures that comparison.json repeats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..artifacts import ArtifactError, Grouped, Simulated, TrainHistory, read_attrs, read_telemetry

#: The chain raw -> grouped -> normalized -> prediction -> stitched -> truth: (stage, what the
#: ratio is, its contract). The normalized contract is the input scale a recorded by normalize.
CHAIN_CONTRACTS: tuple[tuple[str, str, str], ...] = (
    ("raw", "mean measured counts per pattern / nphotons (simulated.h5)", "1"),
    ("grouped", "mean test-group amplitude (grouped.h5) / mean raw amplitude of the same patterns "
                "(simulated.h5)", "1"),
    ("normalized", "mean test input / mean test-group amplitude (normalized.h5 / grouped.h5)",
     "a (input_scale)"),
    ("prediction", "mean predicted counts / mean measured counts (inferred.h5)", "1"),
    ("stitched", "Σ coverage·|stitched| / Σ_j Σ w_j·|Ô_j|: amplitude kept by the overlap average (stitched.h5)",
     "1"),
    ("truth", "mean|Ô| / mean|O| over the evaluation mask (amplitude bias)", "1"),
    ("phase", "least-squares scale of the reconstructed phase against the true phase over the evaluation mask "
              "(phase contrast kept)", "1"),
)

#: Links that follow the phase rather than the amplitude: their cumulative values are their own.
PHASE_LINKS = frozenset({"phase"})

@dataclass(frozen=True)
class ChainLink:
    """One stage of the ratio chain: ratio and contract (dimensionless unless noted),
    relative = ratio / contract, cumulative = Π ratios so far, cumulative_relative =
    Π relatives so far, broken = |relative − 1| > tolerance or not finite."""

    stage: str
    quantity: str
    ratio: float
    contract: float
    relative: float
    cumulative: float
    cumulative_relative: float
    broken: bool

def ratio_chain(entries: Sequence[tuple[str, str, float, float]], tolerance: float
                ) -> tuple[list[ChainLink], str | None]:
    """Build the chain from (stage, quantity, ratio, contract) entries in pipeline order.

    A link of :data:`PHASE_LINKS` measures the phase, not the amplitude: its cumulative
    values start afresh. Returns (links, name of the first broken stage or None).
    """
    links: list[ChainLink] = []
    cum, cum_rel = 1.0, 1.0
    first: str | None = None
    for stage, quantity, ratio, contract in entries:
        if stage in PHASE_LINKS:
            cum, cum_rel = 1.0, 1.0
        rel = ratio / contract if contract else float("nan")
        cum *= ratio
        cum_rel *= rel
        broken = not math.isfinite(rel) or abs(rel - 1.0) > tolerance
        if broken and first is None:
            first = stage
        links.append(ChainLink(stage, quantity, float(ratio), float(contract), float(rel), float(cum),
                               float(cum_rel), bool(broken)))
    return links, first

def _ratio_or_attr(path: str | Path, name: str) -> float:
    _, ratios = read_telemetry(path)
    if name in ratios:
        return float(ratios[name])
    attrs = read_attrs(path)
    if name in attrs:
        return float(attrs[name])
    raise ArtifactError(f"{path}: {name}: expected a telemetry ratio_{name} or a root attribute, found neither")

def _mean(path: str | Path, array: str) -> float:
    stats, _ = read_telemetry(path)
    if array not in stats or "mean" not in stats[array]:
        raise ArtifactError(f"{path}: telemetry/{array}: expected its statistics (mean), found arrays {sorted(stats)}")
    return float(stats[array]["mean"])

def raw_mean_amplitude(simulated: str | Path, grouped: str | Path) -> float:
    """Mean raw amplitude sqrt(n) [photons^0.5] over exactly the patterns of the test groups
    (grouped.h5 ``test/indices``, repeats counted), read from simulated.h5 ``amplitude``.

    The scan-wide mean in simulated.h5's telemetry is not the right reference: the mean
    of a subset of patterns differs from the scan's by the object's local contrast
    (6 % on the ci preset, gs2_ideal), which a 5 % tolerance would flag as broken.
    """
    return float(Simulated.read_pattern_mean_amplitude(simulated, Grouped.read_indices(grouped, "test")).mean())

def chain_entries(simulated: str | Path, grouped: str | Path, normalized: str | Path, inferred: str | Path,
                  stitched: str | Path, amplitude_bias: float | None,
                  phase_scale: float | None = None) -> list[tuple[str, str, float, float]]:
    """The chain's (stage, quantity, ratio, contract) entries in pipeline order, from the
    artifacts' telemetry (and, for the grouped link's reference, :func:`raw_mean_amplitude`).

    ``amplitude_bias`` None (imported data, no true object) keeps only the links that need
    neither the simulated dose nor the truth: grouped, normalized, prediction, stitched.
    ``phase_scale`` (the phase's least-squares scale against the truth) adds the phase link.
    """
    grp_amp = _mean(grouped, "test/amplitude")
    links = {
        "grouped": (grp_amp / raw_mean_amplitude(simulated, grouped), 1.0),
        "normalized": (_mean(normalized, "test/inputs") / grp_amp, _ratio_or_attr(normalized, "input_scale")),
        "prediction": (_ratio_or_attr(inferred, "predicted_over_measured_counts"), 1.0),
        "stitched": (_ratio_or_attr(stitched, "stitched_over_inferred"), 1.0),
    }
    if amplitude_bias is not None:
        links["raw"] = (_ratio_or_attr(simulated, "measured_over_expected"), 1.0)
        links["truth"] = (amplitude_bias, 1.0)
    if phase_scale is not None:
        links["phase"] = (phase_scale, 1.0)
    return [(stage, quantity, *links[stage]) for stage, quantity, _ in CHAIN_CONTRACTS if stage in links]

def nan_status(train_status: str, artifacts: Mapping[str, str | Path]) -> str:
    """"ok", or what is wrong: the train stage's NaN guard message and the NaN/Inf counts
    of every array in the given artifacts' telemetry ({label: path})."""
    problems = [] if train_status == "ok" else [f"train: {train_status}"]
    for label, path in artifacts.items():
        stats, _ = read_telemetry(path)
        for name, st in stats.items():
            nan, inf = int(st.get("nan", 0) or 0), int(st.get("inf", 0) or 0)
            if nan or inf:
                problems.append(f"{label}:{name}: {nan} NaN, {inf} Inf")
    return "ok" if not problems else "; ".join(problems)


def _attr(attrs: Mapping[str, Any], key: str, cast: type, default: Any) -> Any:
    v = attrs.get(key, default)
    if isinstance(v, bytes):
        v = v.decode()
    try:
        return cast(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError):
        return default


def training_summary(hist: TrainHistory) -> dict[str, Any]:
    """The train stage's figures for comparison.json: train_seconds, samples_per_second,
    epochs_run and nan_status (from train.h5 attrs; NaN/"unknown" when absent, except
    epochs_run, which then falls back to the length of the loss history)."""
    return {
        "train_seconds": _attr(hist.attrs, "train_seconds", float, float("nan")),
        "samples_per_second": _attr(hist.attrs, "samples_per_second", float, float("nan")),
        "epochs_run": _attr(hist.attrs, "epochs_run", int, len(hist.history["loss"])),
        "nan_status": _attr(hist.attrs, "nan_status", str, "unknown"),
    }
