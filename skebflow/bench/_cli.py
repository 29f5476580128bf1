"""Benchmarks: ``python -m skebflow bench COMMAND`` (speed, nll, truth, quality, ...).

``speed``
    Time per training step of every objective on the paper's FC flow (batch 100) at
    several dimensions, as ratios to maximum likelihood and to the floor (a step whose
    loss is the mean energy); see :mod:`skebflow.bench._speed`.
``nll``
    Held-out NLL of every objective against ML, KernelDensity and GaussianMixture on
    known-density teacher data, the 2-D toys and the 8×8 digits; see
    :mod:`skebflow.bench._nll`.
``truth``
    Each objective minimized from a teacher's exact parameters on a finite sample: where
    the objective's own optimum lies; see :mod:`skebflow.bench._truth`.
``inference``
    Rows per second of ``score_samples``, ``score_gradient`` and ``sample`` against
    GaussianMixture and KernelDensity on the same rows, and the peak memory of each
    method on 1,000,000 × 64 rows in a fresh process; see :mod:`skebflow.bench._inference`.
``quality``
    Held-out log-likelihood of the default ``EBFlowDensity`` (and, with ``--models``, of
    the score-matching objectives) against KernelDensity, a BIC-selected GaussianMixture
    and a zuko neural spline flow on 2-D toys, scikit-learn tables and Gaussian-mixture
    teachers; see :mod:`skebflow.bench._quality`.
anytime
    Held-out NLL against training seconds of every objective on the same flow and data,
    and the time each needs to come within 1 % of ML's final NLL; see
    python -m skebflow bench anytime --help.
``detector``
    The share of fresh inliers each outlier detector flags against its contamination:
    ``EBFlowOutlierDetector`` (held-out and training thresholds), ``IsolationForest``
    and ``LocalOutlierFactor``; see :mod:`skebflow.bench._detector`.
``scale``
    Fit time and held-out likelihood of the default against a BIC-selected
    GaussianMixture as the number of rows grows (1,000 to 1,000,000), with a plot of
    time against rows; see :mod:`skebflow.bench._scale`.

Each writes ``<name>.json`` (machine, command, configuration, every measurement),
``<name>.md`` (tables) and, for ``speed``, ``speed.png`` (when matplotlib is installed)
into ``--output``. ``--quick`` runs a smoke test in seconds.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     main(["speed", "--quick", "--no-plot", "--output", folder, "--log", "quiet"])
0
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sklearn
import torch
from threadpoolctl import threadpool_limits

from skebflow.bench._anytime import (
    ANYTIME_OBJECTIVES,
    ANYTIME_TASKS,
    BATCH_SIZE,
    DEFAULT_BUDGETS,
    EMA_DECAY,
    FIRST_CHECKPOINT_FRACTION,
    LEARNING_RATE,
    N_CHECKPOINTS,
    QUICK_CHECKPOINTS,
    TARGET_FRACTION,
    anytime_markdown,
    make_anytime_tasks,
    plot_anytime,
    run_anytime,
)
from skebflow.bench._baselines import BASELINES, BIC_COMPONENTS, KDE_BANDWIDTHS, QUALITY_PEERS
from skebflow.bench._detector import DETECTOR_DATASETS, detector_markdown, run_detector
from skebflow.bench._inference import (
    INFERENCE_FEATURES,
    MEMORY_METHODS,
    inference_markdown,
    measure_memory,
    run_inference,
)
from skebflow.bench._nll import NLL_GROUPS, NLL_OBJECTIVES, nll_markdown, run_nll, summarize
from skebflow.bench._peers import NSF_CONFIG
from skebflow.bench._quality import (
    DEFAULT_MODELS,
    EBFLOW_MODELS,
    GRID_EXPANSION,
    GRID_KDE_MAX_TRAIN,
    GRID_POINTS,
    IMAGE_MODELS,
    OBJECTIVE_MODELS,
    POLISH_FRACTION,
    run_quality,
)
from skebflow.bench._quality_report import quality_markdown
from skebflow.bench._quality_report import summarize as summarize_quality
from skebflow.bench._scale import (
    SCALE_FEATURES,
    SCALE_SIZES,
    plot_scale,
    run_scale,
    scale_markdown,
)
from skebflow.bench._speed import SPEED_OBJECTIVES, run_speed
from skebflow.bench._speed_report import plot_speed, speed_markdown
from skebflow.bench._tasks import QUALITY_GROUPS, make_quality_sets, make_tasks
from skebflow.bench._truth import TRUTH_OBJECTIVES, run_truth, truth_markdown
from skebflow.objectives import OBJECTIVES
from skebflow.utils import DTYPES, resolve_device

__all__ = ["main"]


# ------------------------------------------------------------------------------ helpers
def _machine(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "device": str(device),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Limit torch's and the BLAS libraries' (numpy, scikit-learn) CPU threads to ``n``."""
    previous = torch.get_num_threads()
    if n is None:
        yield
        return
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(previous)


def _write(folder: Path, name: str, payload: dict, markdown: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload["machine"]["load_average_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    (folder / f"{name}.md").write_text(markdown)


def _positive(text: str) -> int:
    """Parse a positive integer option (argparse names the option on failure)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _image_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"an image shape is CxHxW, e.g. 1x28x28; got {text!r}")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


# ------------------------------------------------------------------------ subcommands
def _speed(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    device = resolve_device(args.device)
    features = [8, 32] if args.quick else args.features
    repeats, steps, warmup = (1, 1, 1) if args.quick else (args.repeats, args.steps, args.warmup)
    with _threads(args.threads):
        machine = _machine(device)
        records = run_speed(
            features,
            objectives=tuple(args.objectives),
            repeats=repeats,
            steps_per_round=steps,
            warmup=warmup,
            device=device,
            dtype=DTYPES[args.dtype],
            log=log,
            image_shapes=tuple(args.images),
        )
    config = {"features": features, "repeats": repeats, "steps_per_round": steps}
    config["images"] = [list(shape) for shape in args.images]
    config.update(warmup=warmup, batch_size=100, n_blocks=2, dtype=args.dtype, quick=args.quick)
    payload = {"benchmark": "speed", "command": sys.argv, "machine": machine, "config": config}
    payload["results"] = records
    folder = Path(args.output)
    _write(folder, "speed", payload, speed_markdown(records))
    if not args.no_plot:
        plot_speed(records, folder / "speed.png", log)
    log(f"wrote {folder / 'speed.json'} and {folder / 'speed.md'}")
    return 0


def _nll(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    device = resolve_device(args.device)
    groups = NLL_GROUPS if args.datasets is None else tuple(args.datasets)
    tasks = make_tasks(
        groups=groups,
        teacher_features=(4,) if args.quick else tuple(args.teacher_features),
        toys=("sine",) if args.quick else tuple(args.toys),
        quick=args.quick,
        max_iter=args.max_iter,
        n_train=args.n_train,
        patience=args.patience,
        learning_rate=args.learning_rate,
    )
    if args.tasks:
        unknown = sorted(set(args.tasks) - {t.name for t in tasks})
        if unknown:
            raise SystemExit(
                f"bench nll: unknown tasks {unknown}; these groups have {[t.name for t in tasks]}"
            )
        tasks = [t for t in tasks if t.name in args.tasks]
    seeds = (0,) if args.quick else tuple(range(args.seeds))
    start = time.perf_counter()
    with _threads(args.threads):
        machine = _machine(device)
        records = run_nll(
            tasks,
            objectives=tuple(args.objectives),
            seeds=seeds,
            baselines=None if args.no_baselines else BASELINES,
            device=str(device),
            dtype=args.dtype,
            log=log,
        )
    summary = summarize(records)
    config = {"tasks": [{"name": t.name, "params": t.params} for t in tasks], "seeds": seeds}
    config.update(quick=args.quick, dtype=args.dtype, seconds=time.perf_counter() - start)
    payload = {"benchmark": "nll", "command": sys.argv, "machine": machine, "config": config}
    payload.update(summary=summary, runs=records)
    folder = Path(args.output)
    _write(folder, "nll", payload, nll_markdown(summary))
    log(f"wrote {folder / 'nll.json'} and {folder / 'nll.md'}")
    return 0


def _truth(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    sizes = {"features": args.features, "n_train": args.n_train, "n_test": args.n_test}
    steps = {"iterations": args.iterations, "report_every": args.report_every}
    if args.quick:
        sizes, steps = {"features": 4, "n_train": 100, "n_test": 200}, {"iterations": 4}
        steps["report_every"] = 2
    with _threads(args.threads):
        machine = _machine(torch.device("cpu"))
        records = run_truth(
            **sizes,
            **steps,
            objectives=tuple(args.objectives),
            seed=args.seed,
            dtype=DTYPES[args.dtype],
            log=log,
        )
    config = {**sizes, **steps, "seed": args.seed, "dtype": args.dtype, "quick": args.quick}
    payload = {"benchmark": "truth", "command": sys.argv, "machine": machine, "config": config}
    payload["results"] = records
    folder = Path(args.output)
    _write(folder, "truth", payload, truth_markdown(records))
    log(f"wrote {folder / 'truth.json'} and {folder / 'truth.md'}")
    return 0


def _inference(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    features = (2, 8) if args.quick else tuple(args.features)
    sizes = (
        {"n_rows": 200, "n_train": 200, "repeats": 1}
        if args.quick
        else {"n_rows": args.n_rows, "n_train": args.n_train, "repeats": args.repeats}
    )
    memory_size = (
        {"n_rows": 20_000, "features": 8}
        if args.quick
        else {"n_rows": args.memory_rows, "features": args.memory_features}
    )
    with _threads(args.threads):
        machine = _machine(torch.device("cpu"))
        throughput = run_inference(features, **sizes, log=log)
        methods = MEMORY_METHODS[2:3] if args.quick else MEMORY_METHODS  # quick: sample only
        memory = [] if args.no_memory else measure_memory(methods, **memory_size, log=log)
    config = {"features": features, **sizes, "memory": memory_size, "quick": args.quick}
    payload = {"benchmark": "inference", "command": sys.argv, "machine": machine}
    payload.update(config=config, throughput=throughput, memory=memory)
    folder = Path(args.output)
    _write(folder, "inference", payload, inference_markdown(throughput, memory))
    log(f"wrote {folder / 'inference.json'} and {folder / 'inference.md'}")
    return 0


#: ``--models`` shorthands of ``bench quality``.
_MODEL_ALIASES = {
    "default": DEFAULT_MODELS,
    "score": EBFLOW_MODELS[1:],
    "objectives": OBJECTIVE_MODELS,
    "all": (*DEFAULT_MODELS, *EBFLOW_MODELS[1:]),
    "images": ("EBFlow", *IMAGE_MODELS, "KernelDensity", "GaussianMixture"),
}
_QUICK_DATASETS = ("pinwheel", "iris", "mixture-4")


def _zuko_version() -> str | None:
    try:
        return importlib.metadata.version("zuko")
    except importlib.metadata.PackageNotFoundError:
        return None


def _quality(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    names = args.datasets or (_QUICK_DATASETS if args.quick else QUALITY_GROUPS)
    sets = make_quality_sets(tuple(names), quick=args.quick, n_train=args.n_train)
    models = tuple(dict.fromkeys(m for n in args.models for m in _MODEL_ALIASES.get(n, (n,))))
    seeds = tuple(range(1 if args.quick else args.seeds))
    start = time.perf_counter()
    with _threads(args.threads):
        machine = _machine(torch.device("cpu"))
        machine["zuko"] = _zuko_version()
        records = run_quality(
            sets,
            models=models,
            seeds=seeds,
            peers=QUALITY_PEERS,
            jobs=args.jobs,
            threads=args.threads,
            quick=args.quick,
            log=log,
        )
    seconds = time.perf_counter() - start
    summary = summarize_quality(records)
    config = {"datasets": [vars(s) for s in sets], "models": list(models), "seeds": seeds}
    config.update(jobs=args.jobs, threads=args.threads, quick=args.quick, seconds=seconds)
    config.update(nsf=NSF_CONFIG, polish_fraction=POLISH_FRACTION)
    config.update(kde_bandwidths=KDE_BANDWIDTHS.tolist(), gmm_components=BIC_COMPONENTS)
    config["grid_integral"] = {"points_per_axis": GRID_POINTS, "box_expansion": GRID_EXPANSION}
    config["grid_integral"]["kde_max_train"] = GRID_KDE_MAX_TRAIN
    payload = {"benchmark": "quality", "command": sys.argv, "machine": machine}
    payload.update(config=config, summary=summary, runs=records)
    header = [
        f"Wall time {seconds / 60:.1f} min with {args.jobs} worker process(es) of "
        f"{args.threads} thread(s) on {machine['cpu_count']} CPU(s) ({machine['cpu']}); "
        f"load average at the start {machine['load_average_start']}.",
        "",
    ]
    folder = Path(args.output)
    _write(folder, "quality", payload, "\n".join(header) + quality_markdown(summary, len(seeds)))
    log(f"wrote {folder / 'quality.json'} and {folder / 'quality.md'} ({seconds:.0f} s)")
    return 0


def _anytime(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    device = resolve_device(args.device)
    tasks = make_anytime_tasks(tuple(args.tasks), quick=args.quick)
    checkpoints = QUICK_CHECKPOINTS if args.quick and args.checkpoints is None else args.checkpoints
    checkpoints = N_CHECKPOINTS if checkpoints is None else checkpoints
    options = {"n_checkpoints": checkpoints, "seed": args.seed, "device": device}
    options.update(dtype=DTYPES[args.dtype], learning_rate=args.learning_rate)
    options.update(barrier=not args.no_barrier, whiten=not args.no_whiten, budget=args.budget)
    start = time.perf_counter()
    with _threads(args.threads):
        machine = _machine(device)
        results = run_anytime(tasks, tuple(args.objectives), **options, log=log)
    seconds = time.perf_counter() - start
    config = {"tasks": [t.name for t in tasks], "objectives": list(args.objectives)}
    config.update(budget=args.budget, default_budgets=DEFAULT_BUDGETS, quick=args.quick)
    config.update(checkpoints=checkpoints, first_checkpoint_fraction=FIRST_CHECKPOINT_FRACTION)
    config.update(seed=args.seed, dtype=args.dtype, learning_rate=args.learning_rate)
    config.update(batch_size=BATCH_SIZE, ema_decay=EMA_DECAY, target_fraction=TARGET_FRACTION)
    config.update(barrier=not args.no_barrier, whiten=not args.no_whiten, seconds=seconds)
    payload = {"benchmark": "anytime", "command": sys.argv, "machine": machine, "config": config}
    payload["results"] = results
    header = [
        f"Wall time {seconds / 60:.1f} min on {machine['cpu_count']} CPU(s) ({machine['cpu']}), "
        f"device {device}, {machine['torch_threads']} torch thread(s); load average at the "
        f"start {machine['load_average_start']}.",
        "",
    ]
    folder = Path(args.output)
    _write(folder, "anytime", payload, "\n".join(header) + anytime_markdown(results))
    if not args.no_plot:
        for path in plot_anytime(results, folder, log):
            log(f"wrote {path}")
    log(f"wrote {folder / 'anytime.json'} and {folder / 'anytime.md'} ({seconds:.0f} s)")
    return 0


_ANYTIME_TASK_LINES = "\n".join(
    f"  {name:<13} the paper's {flow} on {shape} digits".ljust(56)
    + f"{DEFAULT_BUDGETS[name]:g} s per objective"
    for name, flow, shape in (
        ("fc-784", "FC flow", "1x28x28"),
        ("fc-3072", "FC flow", "3x32x32"),
        ("conv-1x28x28", "CNN", "1x28x28"),
        ("conv-3x32x32", "CNN", "3x32x32"),
    )
)
_ANYTIME_HELP = f"""\
Held-out NLL against training wall-clock time, for each objective.

For each task, every objective trains a fresh copy of the same initial flow with the
same recipe (Adam, learning rate {LEARNING_RATE:g}, batch {BATCH_SIZE}, EMA {EMA_DECAY:g},
gradient-norm clipping; each objective's own options; the score-matching objectives with the
estimator's default singular-value barrier) for a wall-clock budget. At {N_CHECKPOINTS}
checkpoints, geometric in training time, the exact held-out NLL of the kept (EMA) flow
is computed in float64 on a fixed test set (nats per image and bits per dimension).
The training clock counts everything a training step does and stops during the
checkpoint evaluations.

Tasks (scikit-learn's 8x8 digits resized by bilinear interpolation, rounded to integers,
dequantized and logit-mapped; nothing is downloaded), with their default budgets:
{_ANYTIME_TASK_LINES}
With --quick every task runs on 4x4 images for a fraction of a second per objective.

Report, per task: the time each objective needs to come within {100 * TARGET_FRACTION:g} % of ML's
final held-out NLL (or "not reached in the budget"), the time from which it stays there,
when ML's curve first gets to each objective's final NLL, ML's and each objective's
final NLL, steps per second, and the time of one exact log-normalizer (what an
estimator's per-epoch validation adds). Files in --output: anytime.json, anytime.md
and, when matplotlib is installed, anytime-<task>.png. On a CPU shared with other jobs,
--threads 1 keeps the timings steady.

Example:
  python -m skebflow bench anytime --tasks fc-784 --budget 120 --threads 1 --output out
"""


def _plain_help(doc: str) -> str:
    r"""Return a docstring as ``--help`` text: no Examples section, no reST markup.

    ``:mod:`x``` and ````x```` become ``x``, so the terminal shows what a reader means.

    Parameters
    ----------
    doc : str
        A numpydoc docstring.

    Returns
    -------
    str
        The text before its Examples section, without reST roles and literals.

    Examples
    --------
    >>> _plain_help("Use ``speed``; see :mod:`skebflow.bench._speed`.\n\nExamples\n--------\n")
    'Use speed; see skebflow.bench._speed.'
    """
    text = doc.split("\nExamples\n--------", 1)[0]
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skebflow bench", description=_plain_help(__doc__)
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("speed", help="time per training step of every objective")
    nll = commands.add_parser("nll", help="held-out NLL of every objective and baselines")
    truth = commands.add_parser("truth", help="each objective's optimum, from the truth")
    quality = commands.add_parser("quality", help="held-out likelihood of EBFlow and peers")
    inference = commands.add_parser("inference", help="rows/s and peak memory of inference")
    anytime = commands.add_parser(
        "anytime",
        help="held-out NLL against training seconds of every objective",
        description=_ANYTIME_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subcommands = ((speed, None), (nll, 1), (truth, None), (quality, 1), (inference, 1))
    detector = commands.add_parser(
        "detector", help="share of fresh inliers each outlier detector flags"
    )
    scale = commands.add_parser(
        "scale", help="fit time and held-out likelihood of the default as the rows grow"
    )
    subcommands += ((anytime, None), (detector, 1), (scale, 1))
    for sub, default_threads in subcommands:
        sub.add_argument("--output", default=f"bench-output/{sub.prog.split()[-1]}")
        if sub in (speed, nll, anytime):
            sub.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
        if sub not in (quality, inference, detector, scale):
            sub.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
        sub.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
        sub.add_argument(
            "--threads",
            type=int,
            default=default_threads,
            help=f"torch and BLAS threads during the run (default: {default_threads or 'torch'})",
        )
        sub.add_argument("--log", choices=("print", "quiet"), default="print")
    speed.add_argument("--features", type=int, nargs="*", default=[256, 784, 3072])
    speed.add_argument(
        "--images",
        type=_image_shape,
        nargs="+",
        default=[],
        metavar="CxHxW",
        help="also time the paper's CNN on these images, e.g. 1x28x28 3x32x32",
    )
    speed.add_argument("--objectives", nargs="+", default=list(SPEED_OBJECTIVES))
    speed.add_argument("--repeats", type=int, default=10, help="interleaved rounds")
    speed.add_argument("--steps", type=int, default=3, help="timed steps per round")
    speed.add_argument("--warmup", type=int, default=3, help="untimed steps per objective")
    speed.add_argument("--no-plot", action="store_true")
    nll.add_argument("--datasets", nargs="+", choices=NLL_GROUPS)
    nll.add_argument(
        "--tasks", nargs="+", help="keep only these tasks of the groups, e.g. digits-conv"
    )
    nll.add_argument("--objectives", nargs="+", default=list(NLL_OBJECTIVES))
    nll.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1")
    nll.add_argument("--teacher-features", type=int, nargs="+", default=[16, 64])
    nll.add_argument("--toys", nargs="+", default=["sine", "swirl", "checkerboard"])
    nll.add_argument("--max-iter", type=int, default=None, help="override the epoch budgets")
    nll.add_argument("--n-train", type=int, default=None, help="teacher and toy sample size")
    nll.add_argument("--no-baselines", action="store_true")
    nll.add_argument("--patience", type=int, default=10, help="n_iter_no_change of every fit")
    nll.add_argument("--learning-rate", type=float, default=1e-3, help="of every flow")
    truth.add_argument("--features", type=int, default=64, help="teacher dimension")
    truth.add_argument("--n-train", type=int, default=4500)
    truth.add_argument("--n-test", type=int, default=20000)
    truth.add_argument("--objectives", nargs="+", default=list(TRUTH_OBJECTIVES))
    truth.add_argument("--iterations", type=int, default=200, help="L-BFGS iterations")
    truth.add_argument("--report-every", type=int, default=20)
    truth.add_argument("--seed", type=int, default=0)
    quality.add_argument(
        "--datasets", nargs="+", help="groups (toys, tables, teachers) or names; default: all"
    )
    quality.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    quality.add_argument(
        "--models",
        nargs="+",
        default=["default"],
        choices=[*_MODEL_ALIASES, *DEFAULT_MODELS, *EBFLOW_MODELS[1:], *IMAGE_MODELS],
        help="rows, or default (EBFlow and the peers), score (the score-matching rows), "
        "objectives (EBFlow, EBFlow-ssm, EBFlow-dsm, EBFlow-fdssm: each objective against ML), "
        "all, images (the FC default, the conv and glow flows and the classical peers; digits)",
    )
    quality.add_argument("--jobs", type=int, default=2, help="worker processes (joblib)")
    quality.add_argument("--n-train", type=int, default=None, help="toy and teacher size")
    inference.add_argument("--features", type=int, nargs="+", default=list(INFERENCE_FEATURES))
    inference.add_argument("--n-rows", type=int, default=10_000, help="rows per call")
    inference.add_argument("--n-train", type=int, default=2_000, help="training rows")
    inference.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    inference.add_argument("--memory-rows", type=int, default=1_000_000)
    inference.add_argument("--memory-features", type=int, default=64)
    inference.add_argument("--no-memory", action="store_true", help="throughput only")
    anytime.add_argument(
        "--tasks", nargs="+", choices=ANYTIME_TASKS, default=list(ANYTIME_TASKS), metavar="TASK"
    )
    anytime.add_argument(
        "--objectives",
        nargs="+",
        choices=sorted(OBJECTIVES),
        default=list(ANYTIME_OBJECTIVES),
        help="ml is the reference of the 1 %% target (default: ml ssm dsm fdssm)",
    )
    anytime.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="training seconds per objective (default: the task's, see above)",
    )
    anytime.add_argument(
        "--checkpoints",
        type=int,
        default=None,
        help=f"evaluations per objective after the untrained one (default: {N_CHECKPOINTS}, "
        f"--quick {QUICK_CHECKPOINTS})",
    )
    anytime.add_argument("--seed", type=int, default=0, help="split, noise and test draws")
    anytime.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    anytime.add_argument(
        "--no-barrier", action="store_true", help="no singular-value barrier for any objective"
    )
    anytime.add_argument(
        "--no-whiten",
        action="store_true",
        help="no whitening map in front of the FC flow for the score-matching objectives",
    )
    anytime.add_argument("--no-plot", action="store_true")
    detector.add_argument("--datasets", nargs="+", choices=DETECTOR_DATASETS)
    detector.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1")
    detector.add_argument("--contaminations", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    scale.add_argument("--sizes", type=int, nargs="+", default=list(SCALE_SIZES))
    scale.add_argument("--features", type=int, nargs="+", default=list(SCALE_FEATURES))
    scale.add_argument("--seeds", type=_positive, default=1, help="seeds 0 .. N-1")
    scale.add_argument("--no-plot", action="store_true")
    return parser


def _table_benchmark(
    args: argparse.Namespace,
    name: str,
    run: Callable[[], list[dict]],
    note: str,
    markdown: Callable[[list[dict]], str],
    log: Callable[[str], None],
) -> tuple[list[dict], Path]:
    """Run a benchmark of rows on the CPU under ``--threads``; write its JSON and table.

    The table's header says the wall time, the threads, the machine and ``note``.
    """
    start = time.perf_counter()
    with _threads(args.threads):
        machine = _machine(torch.device("cpu"))
        rows = run()
    seconds = time.perf_counter() - start
    payload = {"benchmark": name, "command": sys.argv, "machine": machine, "rows": rows}
    header = (
        f"Wall time {seconds / 60:.1f} min, {args.threads} thread(s), on "
        f"{machine['cpu_count']} CPU(s) ({machine['cpu']}); {note}\n\n"
    )
    folder = Path(args.output)
    _write(folder, name, payload, header + markdown(rows))
    log(f"wrote {folder / (name + '.json')} and {folder / (name + '.md')} ({seconds:.0f} s)")
    return rows, folder


def _scale(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    sizes = (300, 600) if args.quick else tuple(args.sizes)
    features = (2,) if args.quick else tuple(args.features)
    seeds = tuple(range(args.seeds))
    rows, folder = _table_benchmark(
        args,
        "scale",
        lambda: run_scale(sizes=sizes, features=features, seeds=seeds, quick=args.quick, log=log),
        f"seeds {list(seeds)}; each pair fitted one after the other in one process. "
        "Held-out: mean log-likelihood of the same fresh rows, nats per sample.",
        scale_markdown,
        log,
    )
    if not args.no_plot:
        plot = plot_scale(rows, folder / "scale.png")
        if plot is not None:
            log(f"wrote {plot}")
    return 0


def _detector(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    names = args.datasets or (("moons",) if args.quick else DETECTOR_DATASETS)
    seeds = tuple(range(1 if args.quick else args.seeds))
    _table_benchmark(
        args,
        "detector",
        lambda: run_detector(
            datasets=names,
            seeds=seeds,
            contaminations=args.contaminations,
            quick=args.quick,
            log=log,
        ),
        f"seeds {list(seeds)}. Share of fresh inliers flagged (mean over seeds): a "
        "calibrated detector flags about the contamination.",
        detector_markdown,
        log,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a benchmark from command-line arguments.

    Parameters
    ----------
    argv : list of str or None, default=None
        Arguments after ``bench`` (``sys.argv[1:]`` when ``None``), e.g.
        ``["speed", "--features", "784", "--output", "out"]``.

    Returns
    -------
    int
        The exit status (0 on success).
    """
    args = _parser().parse_args(argv)
    log: Callable[[str], None] = (lambda _: None) if args.log == "quiet" else print
    commands = {"speed": _speed, "nll": _nll, "truth": _truth, "quality": _quality}
    commands.update(inference=_inference, anytime=_anytime, detector=_detector, scale=_scale)
    return commands[args.command](args, log)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
