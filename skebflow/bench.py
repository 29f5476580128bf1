"""Benchmarks: ``python -m skebflow bench {speed,nll,truth} [options]``.

``speed``
    Time per training step of every objective on the paper's FC flow (batch 100) at
    several dimensions, as ratios to maximum likelihood and to the floor (a step whose
    loss is the mean energy); see :mod:`skebflow.bench_speed`.
``nll``
    Held-out NLL of every objective against ML, KernelDensity and GaussianMixture on
    known-density teacher data, the 2-D toys and the 8×8 digits; see
    :mod:`skebflow.bench_nll`.
``truth``
    Each objective minimized from a teacher's exact parameters on a finite sample: where
    the objective's own optimum lies; see :mod:`skebflow.bench_truth`.

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
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity
from threadpoolctl import threadpool_limits

from skebflow._torch import resolve_device
from skebflow.bench_nll import NLL_GROUPS, NLL_OBJECTIVES, nll_markdown, run_nll, summarize
from skebflow.bench_speed import SPEED_OBJECTIVES, plot_speed, run_speed, speed_markdown
from skebflow.bench_tasks import make_tasks
from skebflow.bench_truth import TRUTH_OBJECTIVES, run_truth, truth_markdown

__all__ = ["BASELINES", "main"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_GMM_COMPONENTS = (1, 2, 4, 8, 16)


# ---------------------------------------------------------------------------- baselines
def _kde(train: np.ndarray, seed: int) -> KernelDensity:
    """KernelDensity with the bandwidth chosen by 3-fold cross-validation over a grid."""
    scale = float(np.mean(np.std(train, axis=0)))
    grid = {"bandwidth": scale * np.logspace(-2.0, 0.5, 11)}
    return GridSearchCV(KernelDensity(), grid, cv=3).fit(train).best_estimator_


def _gmm(train: np.ndarray, seed: int) -> GaussianMixture:
    """Full-covariance GaussianMixture, number of components by 3-fold cross-validation."""
    components = [k for k in _GMM_COMPONENTS if k * (train.shape[1] + 1) < len(train) / 2]
    model = GaussianMixture(covariance_type="full", random_state=seed, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(model, {"n_components": components or [1]}, cv=3)
        return search.fit(train).best_estimator_


#: The scikit-learn baselines of ``bench nll`` (this is the benchmark's only sklearn layer).
BASELINES: dict[str, Callable[[np.ndarray, int], object]] = {
    "KernelDensity": _kde,
    "GaussianMixture": _gmm,
}


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
            dtype=_DTYPES[args.dtype],
            log=log,
        )
    config = {"features": features, "repeats": repeats, "steps_per_round": steps}
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
            dtype=_DTYPES[args.dtype],
            log=log,
        )
    config = {**sizes, **steps, "seed": args.seed, "dtype": args.dtype, "quick": args.quick}
    payload = {"benchmark": "truth", "command": sys.argv, "machine": machine, "config": config}
    payload["results"] = records
    folder = Path(args.output)
    _write(folder, "truth", payload, truth_markdown(records))
    log(f"wrote {folder / 'truth.json'} and {folder / 'truth.md'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skebflow bench", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("speed", help="time per training step of every objective")
    nll = commands.add_parser("nll", help="held-out NLL of every objective and baselines")
    truth = commands.add_parser("truth", help="each objective's optimum, from the truth")
    for sub, default_threads in ((speed, None), (nll, 1), (truth, None)):
        sub.add_argument("--output", default=f"bench-output/{sub.prog.split()[-1]}")
        if sub is not truth:
            sub.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
        sub.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
        sub.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
        sub.add_argument(
            "--threads",
            type=int,
            default=default_threads,
            help=f"torch and BLAS threads during the run (default: {default_threads or 'torch'})",
        )
        sub.add_argument("--log", choices=("print", "quiet"), default="print")
    speed.add_argument("--features", type=int, nargs="+", default=[256, 784, 3072])
    speed.add_argument("--objectives", nargs="+", default=list(SPEED_OBJECTIVES))
    speed.add_argument("--repeats", type=int, default=10, help="interleaved rounds")
    speed.add_argument("--steps", type=int, default=3, help="timed steps per round")
    speed.add_argument("--warmup", type=int, default=3, help="untimed steps per objective")
    speed.add_argument("--no-plot", action="store_true")
    nll.add_argument("--datasets", nargs="+", choices=NLL_GROUPS)
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
    return parser


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
    return {"speed": _speed, "nll": _nll, "truth": _truth}[args.command](args, log)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
