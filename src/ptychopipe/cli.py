"""Command line: ``ptychopipe <stage> ...`` (what the Snakemake rules call) and tools.

Stage commands take the scenario name, the stage's frozen config as canonical
JSON (``--config``, what the rule's ``params:`` carries), named input files and
the output path; they rebuild the frozen config and call the stage's ``run``.
Any expected failure (bad config, bad input file, broken invariant) ends with
one line on stderr, ``ptychopipe <stage>: error: ...``, and exit status 1;
nothing half-written is left because every writer is atomic.

Heavy modules (NumPy, TensorFlow) are imported after the thread limits from
``--threads`` are set, so ``--cores 2`` never oversubscribes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable

#: stage -> (module:function, input names). Every stage also takes --out.
STAGE_COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "simulate": ("ptychopipe.simulate:run", ()),
    "split": ("ptychopipe.grouping:run_split", ("simulated",)),
    "group": ("ptychopipe.grouping:run_group", ("simulated", "split")),
    "normalize": ("ptychopipe.normalize:run", ("simulated", "split", "grouped")),
}

#: Exceptions that mean "bad input or broken invariant": reported as one line.
EXPECTED_ERRORS = ("ConfigError", "ArtifactError", "ProbeFileError", "GroupingError", "InvariantError",
                   "NonFiniteError", "ValueError", "FileNotFoundError", "KeyError")


def set_thread_limits(threads: int) -> None:
    """Cap BLAS/OpenMP/TensorFlow thread pools at ``threads`` (call before heavy imports)."""
    t = str(max(1, threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[var] = t
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={t}").strip()


def _load(target: str) -> Callable:
    mod, func = target.split(":")
    return getattr(importlib.import_module(mod), func)


def _run_stage(args: argparse.Namespace) -> int:
    from .config import from_json

    target, inputs = STAGE_COMMANDS[args.command]
    cfg = from_json(args.command, args.config)
    kwargs = {name: getattr(args, name) for name in inputs}
    _load(target)(cfg, args.scenario, out=args.out, **kwargs)
    return 0


def _telemetry(args: argparse.Namespace) -> int:
    from .report import write_telemetry_table

    md, csv = write_telemetry_table(args.results, args.md, args.csv)
    print(f"wrote {md} and {csv}")
    return 0


def _params_diff(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_scenarios, params_diff

    def resolve(spec: str) -> dict:
        # "NAME" (a scenario of --configfile), "FILE.yaml:NAME", or "FILE.yaml" (its only scenario)
        path, name = args.configfile, spec
        if spec.endswith((".yaml", ".yml")):
            path, name = spec, ""
        elif ".yaml:" in spec or ".yml:" in spec:
            path, name = spec.rsplit(":", 1)
        scen = load_scenarios(path, args.preset)
        if not name:
            if len(scen) != 1:
                raise ConfigError(f"{path}: expected exactly one scenario (or name one as {path}:NAME), "
                                  f"got {sorted(scen)}")
            name = next(iter(scen))
        if name not in scen:
            raise ConfigError(f"{path}: scenario {name!r} not found; expected one of {sorted(scen)}")
        return scen[name]

    rows = params_diff(resolve(args.a), resolve(args.b))
    if not rows:
        print(f"no differences between {args.a} and {args.b}")
        return 0
    width = max(len(f"{s}.{k}") for s, k, _, _ in rows)
    print(f"{'stage.parameter':<{width}}  {args.a}  |  {args.b}")
    current = None
    for stage, key, va, vb in rows:
        if stage != current:
            print(f"[{stage}]")
            current = stage
        print(f"{stage + '.' + key:<{width}}  {va!r}  |  {vb!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptychopipe", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for stage, (_, inputs) in STAGE_COMMANDS.items():
        sp = sub.add_parser(stage, help=f"run the {stage} stage")
        sp.add_argument("--scenario", required=True)
        sp.add_argument("--config", required=True, help="the stage's config as JSON")
        for name in inputs:
            sp.add_argument(f"--{name}", required=True, help=f"input: {name} artifact")
        sp.add_argument("--out", required=True, help="output artifact path")
        sp.add_argument("--threads", type=int, default=1)
        sp.set_defaults(func=_run_stage)
    t = sub.add_parser("telemetry", help="tabulate every artifact's telemetry (markdown + CSV)")
    t.add_argument("--results", default="results")
    t.add_argument("--md", default="results/telemetry.md")
    t.add_argument("--csv", default="results/telemetry.csv")
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(func=_telemetry)
    d = sub.add_parser("params-diff", help="effective parameters that differ between two scenarios, by stage",
                       description="A and B are scenario names of --configfile, or FILE.yaml:NAME, or "
                                   "FILE.yaml holding one scenario.")
    d.add_argument("a")
    d.add_argument("b")
    d.add_argument("--configfile", default="config/scenarios.yaml")
    d.add_argument("--preset", default=None, help="preset to merge (default: the file's `preset`)")
    d.add_argument("--threads", type=int, default=1)
    d.set_defaults(func=_params_diff)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_thread_limits(args.threads)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ not in EXPECTED_ERRORS:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ptychopipe {args.command}: error: {msg}", file=sys.stderr)
        return 1
