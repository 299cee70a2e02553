"""Command line: ``ptychopipe <stage> ...`` (what the Snakemake rules call) and tools.

Stage commands take the scenario name, the stage's frozen config as canonical
JSON (``--config``, what the rule's ``params:`` carries), named input files and
the output path; they rebuild the frozen config and call the stage's ``run``.
Any expected failure (bad config, bad input file, broken invariant) ends with
one line on stderr, ``ptychopipe <stage>: error: ...``, and exit status 1 (Ctrl-C: one line, exit status 130);
nothing half-written is left because every writer is atomic.

Heavy modules (NumPy, TensorFlow) are imported after the thread limits from
``--threads`` are set, so ``--cores 2`` never oversubscribes.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from .errors import PtychopipeError
from .formats import FORMATS
from .stages import STAGES

#: Exceptions that mean "bad input or broken invariant" are reported as one line: every
#: PtychopipeError (subclasses included), these built-in classes exactly (a library's own
#: subclass of them, e.g. json.JSONDecodeError, keeps its traceback), and an operating-system
#: error about a named path (a directory where a file is expected, no permission, a full
#: disk: ``errno`` and ``filename`` set, so the message names the path). h5py's own OSErrors
#: carry neither and keep their traceback.
BUILTIN_ONE_LINE_ERRORS = (ValueError, FileNotFoundError, KeyError)


#: Operating-system errors that are about the machine, not the code (no permission, a read-only
#: or full disk, a quota): one line even when the library raising them (h5py) names no path.
SYSTEM_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO})

#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130


def is_one_line_error(exc: BaseException) -> bool:
    """True for the errors the CLI reports as ``ptychopipe STAGE: error: MESSAGE`` (exit 1)."""
    return (isinstance(exc, PtychopipeError) or type(exc) in BUILTIN_ONE_LINE_ERRORS
            or (isinstance(exc, OSError) and exc.errno is not None
                and (exc.filename is not None or exc.errno in SYSTEM_ERRNOS)))


def set_thread_limits(threads: int) -> None:
    """Cap BLAS/OpenMP/TensorFlow thread pools at ``threads`` (call before heavy imports)."""
    t = str(max(1, threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[var] = t
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # replace (not append to) our own flags, so repeated calls in one process do not pile them up
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith(("--xla_cpu_multi_thread_eigen=", "intra_op_parallelism_threads="))]
    os.environ["XLA_FLAGS"] = " ".join(kept + ["--xla_cpu_multi_thread_eigen=false",
                                               f"intra_op_parallelism_threads={t}"])


def _name_list(text: str) -> list[str]:
    """Comma-separated names (empty items dropped)."""
    return [x for x in text.split(",") if x]


def _run_stage(args: argparse.Namespace) -> int:
    from .config import from_json
    from .progress import duration, progress
    from .quiet import filtered_stderr
    from .stages import run_stage, stage

    s = stage(args.command)
    cfg = from_json(args.command, args.config)
    files = {name: getattr(args, name) for name in s.inputs + s.optional_inputs + s.outputs}
    t0 = time.perf_counter()
    with filtered_stderr():  # TensorFlow's notices out of the log, while the stage runs
        run_stage(args.command, cfg, args.scenario, args.out, **files)
    figures = key_figures(args.command, args)
    progress(f"[{args.command}] {args.scenario}: done in {duration(time.perf_counter() - t0)}"
             + (f"; {figures}" if figures else ""))
    return 0


#: The key figures of each stage's output for its "done" line: telemetry ratios of the HDF5
#: artifact (comparison.json for compare), by name; the first few present are shown.
KEY_FIGURES: dict[str, tuple[str, ...]] = {
    "simulate": ("dose", "parseval"),
    "ingest": ("measured_over_expected", "implied_rms_object_amplitude"),
    "normalize": ("input_scale",),
    "train": ("final_over_initial_loss",),
    "infer": ("predicted_over_measured_counts",),
}


def key_figures(stage: str, args: argparse.Namespace) -> str:
    """One short text of the finished stage's key figures (never fails: progress only)."""
    try:
        if stage == "compare":
            import json

            d = json.loads(open(args.json).read())
            m = d.get("metrics") or {}
            parts = [f"amplitude r {m['amplitude']['pearson_r']:.4f}" if m.get("amplitude") else "",
                     f"amplitude bias {d['amplitude_bias']:.4f}" if d.get("amplitude_bias") is not None else "",
                     f"phase r {m['phase']['pearson_r']:.4f}" if m.get("phase") else "",
                     f"phase ls_scale {m['phase']['ls_scale']:.4f}" if m.get("phase") else "",
                     f"first broken: {d.get('first_broken') or 'none'}"]
            return ", ".join(p for p in parts if p)
        from .artifacts import read_attrs, read_telemetry

        path = args.history if stage == "train" else args.out
        _, ratios = read_telemetry(path)
        shown = [f"{k} {ratios[k]:.4g}" for k in KEY_FIGURES.get(stage, ()) if k in ratios]
        attrs = read_attrs(path)
        if stage == "train" and "epochs_run" in attrs:
            shown.insert(0, f"{int(attrs['epochs_run'])} epochs")
        if stage == "ingest" and "pattern_correlation" in attrs:
            shown.append(f"pattern_correlation {float(attrs['pattern_correlation']):.4f}")
        return ", ".join(shown)
    except Exception:  # noqa: BLE001 - a progress line must never fail a finished stage
        return ""


def _telemetry(args: argparse.Namespace) -> int:
    from .artifacts import ArtifactError
    from .reporting import write_telemetry_table

    if args.artifacts and args.scenarios is not None:
        raise ArtifactError("--scenarios goes with --results, not with named artifact files; nothing written")
    md, csv = write_telemetry_table(args.results, args.md, args.csv, args.scenarios, files=args.artifacts)
    print(f"wrote {md} and {csv}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .reporting import write_summary

    grid = None
    if args.grid:
        if len(args.stitched) != len(args.comparisons) or len(args.simulated) != len(args.comparisons):
            from .config import ConfigError

            raise ConfigError(f"report --grid: expected one --stitched and one --simulated per comparison "
                              f"({len(args.comparisons)}), got {len(args.stitched)} and {len(args.simulated)}")
        grid = (args.grid, args.stitched, args.simulated)
    paths = write_summary(args.comparisons, args.md, args.csv, args.overview, args.baselines,
                          preset=args.preset, config_hash=args.config_hash, grid=grid)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _data_figure(args: argparse.Namespace) -> int:
    from .reporting import data_figure

    print(f"wrote {data_figure(args.simulated, args.split, args.out, args.scenario)}")
    return 0


def _dose_response(args: argparse.Namespace) -> int:
    from .reporting import BIAS_TARGET, write_dose_response

    band = tuple(args.bias_band) if args.bias_band else BIAS_TARGET
    png, csv = write_dose_response(args.comparisons, args.nphotons, args.png, args.csv, band)
    print(f"wrote {png} and {csv}")
    return 0


def _quality_table(args: argparse.Namespace) -> int:
    from .reporting import copy_quality_table, write_quality_table

    if args.from_table:
        out = copy_quality_table(args.from_table, args.out)
        print(f"copied the results table of {args.from_table} into {out}")
        return 0
    out = write_quality_table(args.results, args.out, args.configfile, args.preset, args.scenarios)
    print(f"wrote the results table into {out}")
    return 0


def _config_doc(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .artifacts import write_text_atomic
    from .configdoc import generate, generate_stages

    stale = []
    for path, text, what in ((args.out, generate(args.out, args.schema, args.configfile), "the schema"),
                             *(((args.stages, generate_stages(args.stages), "the stage registry"),)
                               if args.stages else ())):
        if Path(path).read_text() == text:
            print(f"{path} is up to date with {what}")
        elif args.check:
            stale.append(f"{path} is not what {what} gives")
        else:
            write_text_atomic(path, text)
            print(f"wrote {what}'s tables into {path}")
    if stale:
        print(f"{'; '.join(stale)}: run python -m ptychopipe config-doc --out {args.out}"
              + (f" --stages {args.stages}" if args.stages else ""), file=sys.stderr)
        return 1
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks.throughput import run_cli

    print(run_cli(args.configfile, args.preset, tuple(args.gridsize), args.steps, args.json,
                  deterministic=not args.no_deterministic, infer_batch_size=args.infer_batch_size), end="")
    return 0


def _time_to_quality(args: argparse.Namespace) -> int:
    from .benchmarks.timetoquality import run

    run(args.preset, args.scenarios, args.out, threads=args.threads, epochs=args.epochs, results=args.results,
        configfile=args.configfile, build=not args.no_build, starts=args.starts, noise_models=args.noise_models)
    print(f"wrote {args.out}/time_to_quality.csv, .md and .png")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import run

    def art(name: str, given: str | None) -> str:
        return given or os.path.join(args.results, args.scenario, name)

    paths = run(args.format, args.out, stitched=art("stitched.h5", args.stitched),
                inferred=art("inferred.h5", args.inferred), simulated=art("simulated.h5", args.simulated),
                train=art("train.h5", args.train), pixel_size_m=args.pixel_size_m,
                photon_energy_eV=args.photon_energy_ev, detector_distance_m=args.detector_distance_m)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _baseline_compare(args: argparse.Namespace) -> int:
    from .baseline import compare_run
    from .config import from_json

    res = compare_run(from_json("compare", args.config), args.scenario, baseline=args.baseline,
                      simulated=args.simulated, stitched=args.stitched, inferred=args.inferred,
                      comparison=args.comparison, out=args.out, infer_benchmark=args.infer_benchmark,
                      figure=args.figure)
    it = res["iterative"]
    print(f"[baseline-compare] {args.scenario}: {res['quality']['measure']}: PINN {res['quality']['pinn']}, "
          f"iterative {res['quality']['iterative_final']} after {it['seconds_total']:.2f} s "
          f"(final quality at {it['seconds_to_final_quality']} s, PINN's at {it['seconds_to_pinn_quality']} s); "
          f"wrote {args.out}")
    return 0


def _params_diff(args: argparse.Namespace) -> int:
    from . import __version__
    from .config import ConfigError, effective_preset, load_scenarios, load_yaml, params_diff

    merged: list[str] = []  # which file and preset each side was merged from

    def resolve(spec: str) -> dict:
        # "NAME" (a scenario of --configfile), "FILE.yaml:NAME", or "FILE.yaml" (its only scenario)
        path, name = args.configfile, spec
        if spec.endswith((".yaml", ".yml")):
            path, name = spec, ""
        elif ".yaml:" in spec or ".yml:" in spec:
            path, name = spec.rsplit(":", 1)
        scen = load_scenarios(path, args.preset)
        preset = effective_preset(load_yaml(path), args.preset)
        merged.append(f"{path}, preset {preset} ({'--preset' if args.preset is not None else 'the file'})")
        if not name:
            if len(scen) != 1:
                raise ConfigError(f"{path}: expected exactly one scenario (or name one as {path}:NAME), "
                                  f"got {sorted(scen)}")
            name = next(iter(scen))
        if name not in scen:
            raise ConfigError(f"{path}: scenario {name!r} not found; expected one of {sorted(scen)}")
        return scen[name]

    rows = params_diff(resolve(args.a), resolve(args.b))
    where = (f"both from {merged[0]}" if merged[0] == merged[1]
             else f"{args.a} from {merged[0]}; {args.b} from {merged[1]}")
    print(f"# merged: {where}; ptychopipe {__version__}")
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


def package_version() -> str:
    """The installed distribution's version (importlib.metadata), else ``ptychopipe.__version__``
    (a source tree on PYTHONPATH without an install)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ptychopipe")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptychopipe", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"ptychopipe {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for st in STAGES.values():
        sp = sub.add_parser(st.name, help=f"stage: {st.summary}")
        sp.add_argument("--scenario", required=True)
        sp.add_argument("--config", required=True, help="the stage's config as JSON")
        for name in st.inputs:
            sp.add_argument(f"--{name}", required=True, help=f"input: {name} artifact")
        for name in st.optional_inputs:
            sp.add_argument(f"--{name}", default=None, help=f"input (optional): {name} artifact")
        sp.add_argument("--out", required=True, help=f"output: {st.out}")
        for name in st.outputs:
            sp.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True, help=f"output: {name}")
        sp.add_argument("--threads", type=int, default=1)
        sp.set_defaults(func=_run_stage)
    t = sub.add_parser("telemetry", help="tabulate every artifact's telemetry (markdown + CSV)")
    t.add_argument("--results", default="results")
    t.add_argument("--md", default="results/telemetry.md")
    t.add_argument("--csv", default="results/telemetry.csv")
    t.add_argument("--scenarios", default=None, metavar="A,B,...", type=_name_list,
                   help="only these scenarios, comma-separated (default: every folder under --results "
                        "with a simulated.h5)")
    t.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                   help="stage artifacts to tabulate, results/<scenario>/<file> (what the workflow passes: "
                        "exactly these are read); default: every one under --results")
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(func=_telemetry)
    r = sub.add_parser("report", help="summary of all scenarios (markdown + CSV + overview figure) "
                                      "from their comparison.json files")
    r.add_argument("--comparisons", nargs="+", required=True, help="comparison.json of each scenario")
    r.add_argument("--md", default="results/report/summary.md")
    r.add_argument("--csv", default="results/report/summary.csv")
    r.add_argument("--overview", default="results/report/overview.png")
    r.add_argument("--baselines", nargs="*", default=[], help="baseline_comparison.json of the scenarios with the "
                                                              "iterative reference (a PINN-vs-iterative section)")
    r.add_argument("--grid", default=None, help="also write the all-scenarios reconstruction grid (PNG) here")
    r.add_argument("--stitched", nargs="*", default=[], help="with --grid: stitched.h5 of each scenario, in the "
                                                              "order of --comparisons")
    r.add_argument("--simulated", nargs="*", default=[], help="with --grid: simulated.h5 of each scenario, in "
                                                               "the order of --comparisons")
    r.add_argument("--preset", default=None, help="preset of the run (recorded in the summary)")
    r.add_argument("--config-hash", default=None, help="hash of the run's merged scenario parameters (recorded)")
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(func=_report)
    f = sub.add_parser("data-figure", help="one scenario's inputs (PNG): probe amplitude and phase, scan "
                                           "positions, a diffraction pattern on a log scale")
    f.add_argument("--scenario", default="")
    f.add_argument("--simulated", required=True, help="input: simulated.h5")
    f.add_argument("--split", required=True, help="input: split.h5")
    f.add_argument("--out", required=True, help="output PNG")
    f.add_argument("--threads", type=int, default=1)
    f.set_defaults(func=_data_figure)
    dr = sub.add_parser("dose-response", help="dose-response figure and table (PNG + CSV) of the dose sweep "
                                              "from its scenarios' comparison.json files")
    dr.add_argument("--comparisons", nargs="*", default=[], help="comparison.json of each dose-sweep scenario")
    dr.add_argument("--nphotons", nargs="*", type=float, default=[],
                    help="photons per pattern of each scenario, in the order of --comparisons")
    dr.add_argument("--png", default="results/report/dose_response.png")
    dr.add_argument("--csv", default="results/report/dose_response.csv")
    dr.add_argument("--bias-band", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                    help="target band of the amplitude bias, drawn and the CSV's bias_in_target "
                         "(default 0.97 1.03, ptychopipe.reporting.BIAS_TARGET)")
    dr.add_argument("--threads", type=int, default=1)
    dr.set_defaults(func=_dose_response)
    q = sub.add_parser("quality-table", help="write the results table (metrics, training time, backend, date per "
                                             "scenario) between the quality-table markers of --out (created "
                                             "if missing); with --from-table, copy a written table instead")
    q.add_argument("--results", default="results")
    q.add_argument("--out", default="results/report/quality_table.md",
                   help="Markdown file holding the two marker lines (default results/report/quality_table.md)")
    q.add_argument("--from-table", default=None, metavar="FILE",
                   help="copy the table between the markers of FILE (e.g. results/report/quality_table.md) "
                        "into --out (e.g. docs/results.md) instead of reading results")
    q.add_argument("--configfile", default="config/scenarios.yaml")
    q.add_argument("--preset", default="full", help="preset the results were made with (checked against the "
                                                    "artifacts' config hashes; default full)")
    q.add_argument("--scenarios", default=None, metavar="A,B,...", type=_name_list,
                   help="only these scenarios (default: every scenario of --configfile, sweeps included)")
    q.add_argument("--threads", type=int, default=1)
    q.set_defaults(func=_quality_table)
    cd = sub.add_parser("config-doc", help="write the configuration reference (every key: type, default, allowed "
                                           "values, unit, description) from the schema between the config-doc "
                                           "markers of --out")
    cd.add_argument("--out", default="docs/configuration.md", help="Markdown file holding the two marker lines")
    cd.add_argument("--schema", default=None, help="JSON schema (default workflow/schemas/config.schema.yaml)")
    cd.add_argument("--configfile", default="config/scenarios.yaml", help="config whose defaults and presets are shown")
    cd.add_argument("--stages", default="docs/artifacts.md",
                    help="also write the stage table (from the stage registry) between the stages markers of this "
                         "file; '' = not")
    cd.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is out of date")
    cd.add_argument("--threads", type=int, default=1)
    cd.set_defaults(func=_config_doc)
    bench = sub.add_parser("bench", help="benchmarks (docs/performance.md): `bench model` (throughput), "
                                         "`bench time-to-quality` (the network against pty-chi)")
    which = bench.add_subparsers(dest="what", required=True)
    b = which.add_parser("model", help="PINN and bare CNN training/inference samples/s and FLOPs per sample")
    b.add_argument("--configfile", default="config/scenarios.yaml")
    b.add_argument("--preset", default="full", help="preset whose N, model.*, batch sizes are benchmarked")
    b.add_argument("--gridsize", type=int, nargs="+", default=[1, 2])
    b.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    b.add_argument("--infer-batch-size", type=int, default=None,
                   help="inference batch size (default: the preset's infer.batch_size); a GPU wants large ones")
    b.add_argument("--json", default=None, help="also write the results as JSON here")
    b.add_argument("--no-deterministic", action="store_true",
                   help="leave TensorFlow op determinism off (the train stage turns it on; XLA is then used)")
    b.add_argument("--threads", type=int, default=1)
    b.set_defaults(func=_bench)
    tq = which.add_parser("time-to-quality", help="reconstruct the same test patterns with each of the pipeline's "
                                                  "modes and with pty-chi LSQML, score both after every pty-chi "
                                                  "epoch (time_to_quality.csv/.md/.png in --out)")
    tq.add_argument("--preset", required=True, help="preset of config/scenarios.yaml the scenarios are built with")
    tq.add_argument("--scenarios", nargs="+", required=True)
    tq.add_argument("--out", required=True, help="output folder")
    tq.add_argument("--threads", type=int, default=2, help="threads of both sides (TensorFlow/JAX and torch)")
    tq.add_argument("--epochs", type=int, default=20, help="pty-chi epochs per run")
    tq.add_argument("--starts", nargs="+", default=["flat"], choices=["flat", "reconstruction"],
                    help="pty-chi starting objects: flat (ā) and/or the network's stitched reconstruction")
    tq.add_argument("--noise-models", nargs="+", default=["gaussian", "poisson"], choices=["gaussian", "poisson"])
    tq.add_argument("--results", default="results")
    tq.add_argument("--configfile", default="config/scenarios.yaml")
    tq.add_argument("--no-build", action="store_true",
                    help="use the artifacts under --results as they are (default: bring each scenario's "
                         "model.keras up to date with snakemake first)")
    tq.set_defaults(func=_time_to_quality)
    e = sub.add_parser("export", help="write a scenario's stitched reconstruction (with its probe, test positions "
                                      "and patterns) as an NPZ or a ptychodus product + diffraction.h5 "
                                      "(docs/real_data.md)")
    e.add_argument("--format", required=True, choices=FORMATS)
    e.add_argument("--out", required=True, help="output file (ptychodus: the product .h5; diffraction.h5 is "
                                                "written beside it)")
    e.add_argument("--scenario", default="", help="with --results: take the artifacts from RESULTS/SCENARIO/")
    e.add_argument("--results", default="results")
    for name in ("stitched", "inferred", "simulated", "train"):
        e.add_argument(f"--{name}", default=None, help=f"{name}.h5 (default: RESULTS/SCENARIO/{name}.h5)")
    e.add_argument("--pixel-size-m", type=float, default=None, help="ptychodus: object pixel size (m)")
    e.add_argument("--photon-energy-ev", type=float, default=None, help="ptychodus: photon energy (eV)")
    e.add_argument("--detector-distance-m", type=float, default=None, help="ptychodus: detector distance (m)")
    e.add_argument("--threads", type=int, default=1)
    e.set_defaults(func=_export)
    c = sub.add_parser("baseline-compare", help="PINN vs the iterative baseline for one scenario "
                                                "(baseline_comparison.json + figure)")
    c.add_argument("--scenario", required=True)
    c.add_argument("--config", required=True, help="the compare stage's config as JSON")
    for name in ("baseline", "simulated", "stitched", "inferred"):
        c.add_argument(f"--{name}", required=True, help=f"input: {name}.h5")
    c.add_argument("--comparison", required=True, help="input: the PINN's comparison.json")
    c.add_argument("--infer-benchmark", default=None, help="Snakemake benchmark TSV of the infer job (optional)")
    c.add_argument("--out", required=True, help="output: baseline_comparison.json")
    c.add_argument("--figure", default=None, help="output: quality-vs-time PNG")
    c.add_argument("--threads", type=int, default=1)
    c.set_defaults(func=_baseline_compare)
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
    except KeyboardInterrupt:  # Ctrl-C: every writer is atomic, so no output is half-written
        print(f"ptychopipe {args.command}: interrupted (Ctrl-C); no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001
        if not is_one_line_error(exc):
            raise
        if isinstance(exc, OSError) and not isinstance(exc, PtychopipeError):
            from .artifacts import describe_os_error

            msg = describe_os_error(exc)
        else:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ptychopipe {args.command}: error: {msg}", file=sys.stderr)
        return 1
