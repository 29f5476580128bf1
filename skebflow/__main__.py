"""Command line: ``python -m skebflow {demo,bench,fit,score,sample} ...``.

* ``demo``: fit the default :class:`~skebflow.EBFlowDensity` and a score-matching one
  (``--objectives``) on a built-in 2-D data set (checkerboard by default), print
  held-out log-likelihoods next to a cross-validated KernelDensity and a BIC-chosen
  GaussianMixture, and save a picture of every model's density and samples.
* ``bench``: the benchmarks (see ``python -m skebflow bench --help``).
* ``fit`` / ``score`` / ``sample``: train on a CSV or ``.npy`` file, save the model with
  joblib, score another file, or draw samples into a file.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skebflow.bench.baselines import QUALITY_PEERS
from skebflow.datasets.toys import TOY_DATASETS, make_toy, toy_log_density
from skebflow.estimators.density import EBFlowDensity

__all__ = ["main"]

DEMO_OBJECTIVES = ("auto", "dsm")


def _load(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return np.load(path)
    return np.loadtxt(path, delimiter=",", ndmin=2)


def _save(path: str, array: np.ndarray) -> None:
    if path.endswith(".npy"):
        np.save(path, array)
    else:
        np.savetxt(path, array, delimiter=",")


def _baselines(X: np.ndarray) -> dict[str, object]:
    """Fit the peers a user would otherwise pick: a CV-tuned KDE and a BIC-chosen GMM."""
    kde, gmm = QUALITY_PEERS["KernelDensity"](X, 0), QUALITY_PEERS["GaussianMixture"](X, 0)
    return {
        f"GaussianMixture({gmm.info['n_components']}, BIC)": gmm,
        f"KernelDensity(bw={kde.info['bandwidth']:.3f} std, CV)": kde,
    }


def demo(args: argparse.Namespace) -> int:
    """Run the demo: the default and other objectives on a 2-D toy, the peers, a picture."""
    X = make_toy(args.dataset, args.n_samples, random_state=0)
    X_test = make_toy(args.dataset, 5000, random_state=1)
    truth = float(toy_log_density(args.dataset, X_test).mean())
    print(f"data set: {args.dataset} ({len(X)} training, {len(X_test)} held-out samples)")
    print("held-out mean log-likelihood per sample (nats; higher is better)")
    print(f"  {'true density':<40} {truth:8.3f}")
    models: dict[str, object] = {}
    for objective in args.objectives:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = EBFlowDensity(objective=objective, max_iter=args.max_iter, random_state=0)
            model.fit(X)
        name = "EBFlowDensity()" if objective == "auto" else f"EBFlowDensity({objective!r})"
        models[name] = model
        elapsed = time.perf_counter() - start
        print(
            f"  {name:<40} {model.score(X_test):8.3f}   "
            f"({model.architecture_}, {model.objective_}, {model.n_iter_} epochs, {elapsed:.1f} s)"
        )
    for name, model in _baselines(X).items():
        models[name] = model
        print(f"  {name:<40} {float(np.mean(model.score_samples(X_test))):8.3f}")
    if args.output:
        _plot(args, X, models)
    return 0


def _plot(args: argparse.Namespace, X: np.ndarray, models: dict[str, object]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no picture (pip install 'skebflow[examples]').")
        return
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    axis = np.linspace(-5.5, 5.5, 200)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    columns = 1 + len(models)
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 6.4), squeeze=False)
    panels = [("true density", np.exp(toy_log_density(args.dataset, grid)), X[:2000])]
    for name, model in models.items():
        samples = model.sample(2000, random_state=0)
        panels.append((name, np.exp(model.score_samples(grid)), samples))
    for column, (title, density, points) in enumerate(panels):
        axes[0, column].imshow(
            density.reshape(len(axis), len(axis)), origin="lower", extent=(-5.5, 5.5, -5.5, 5.5)
        )
        axes[0, column].set_title(title, fontsize=8)
        axes[1, column].scatter(points[:, 0], points[:, 1], s=1, alpha=0.5)
        axes[1, column].set(xlim=(-5.5, 5.5), ylim=(-5.5, 5.5), aspect="equal")
    axes[1, 0].set_ylabel("samples")
    axes[0, 0].set_ylabel("density")
    fig.tight_layout()
    path = out / f"demo-{args.dataset}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"picture of the densities and samples: {path}")


def fit(args: argparse.Namespace) -> int:
    """Fit on a file and save the model."""
    params = dict(objective=args.objective, max_iter=args.max_iter, random_state=args.seed)
    model = EBFlowDensity(**params, verbose=args.verbose).fit(_load(args.data))
    joblib.dump(model, args.model)
    print(f"fitted {model.n_iter_} epochs; model saved to {args.model}")
    return 0


def score(args: argparse.Namespace) -> int:
    """Score a file with a saved model."""
    model = joblib.load(args.model)
    scores = model.score_samples(_load(args.data))
    if args.output:
        _save(args.output, scores[:, None])
    print(f"mean log-likelihood per sample: {scores.mean():.6f}")
    return 0


def sample(args: argparse.Namespace) -> int:
    """Draw samples from a saved model into a file."""
    model = joblib.load(args.model)
    _save(args.output, model.sample(args.n_samples, random_state=args.seed))
    print(f"{args.n_samples} samples written to {args.output}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skebflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="every objective on a built-in 2-D data set")
    p.add_argument("--dataset", choices=TOY_DATASETS, default="checkerboard")
    p.add_argument("--n-samples", type=int, default=3000)
    p.add_argument("--max-iter", type=int, default=60)
    p.add_argument("--objectives", nargs="+", default=list(DEMO_OBJECTIVES))
    p.add_argument("--output", default="demo-output", help="folder for the picture")
    p.set_defaults(run=demo)
    commands.add_parser("bench", help="benchmarks (see: bench --help)", add_help=False)
    p = commands.add_parser("fit", help="fit on a CSV/.npy file and save the model")
    p.add_argument("data")
    p.add_argument("model", help="output path of the joblib model")
    p.add_argument("--objective", default="auto")
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0)
    p.set_defaults(run=fit)
    p = commands.add_parser("score", help="log-density of each row of a file")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--output", help="write the scores to this CSV/.npy file")
    p.set_defaults(run=score)
    p = commands.add_parser("sample", help="draw samples into a CSV/.npy file")
    p.add_argument("model")
    p.add_argument("output")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``sys.argv[1:]`` when omitted).

    Returns
    -------
    int
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from skebflow.bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
