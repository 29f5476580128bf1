"""The ``demo`` command: flows next to the usual peers on built-in data sets.

It fits the default :class:`~skebflow.EBFlowDensity` and one per other objective
(``--objectives``) on a 2-D toy (checkerboard by default), prints held-out
log-likelihoods next to the true density, a cross-validated KernelDensity and a
BIC-chosen GaussianMixture, and saves a picture of every model's density and samples
(when matplotlib is installed). Then (``--table digits``, the default) the same for the
default flow on a real table, scikit-learn's 8×8 digits, where it is ahead of both
peers, with a picture of held-out digits next to each model's samples.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.bench import QUALITY_PEERS
from skebflow.cli._messages import UsageError, info
from skebflow.datasets import load_table, make_toy, toy_log_density

__all__ = ["DEMO_OBJECTIVES", "DEMO_TABLES", "demo"]

#: The objectives of ``demo`` by default: the default one and denoising score matching.
DEMO_OBJECTIVES = ("auto", "dsm")
#: The real tables ``demo --table`` offers ("none" skips the part).
DEMO_TABLES = ("digits", "none")


def _baselines(X: np.ndarray) -> dict[str, object]:
    """Fit the peers a user would otherwise pick: a CV-tuned KDE and a BIC-chosen GMM."""
    kde, gmm = QUALITY_PEERS["KernelDensity"](X, 0), QUALITY_PEERS["GaussianMixture"](X, 0)
    return {
        f"GaussianMixture({gmm.info['n_components']}, BIC)": gmm,
        f"KernelDensity(bw={kde.info['bandwidth']:.3f} std, CV)": kde,
    }


def demo(args: argparse.Namespace) -> int:
    """Run the demo: the default and other objectives on a 2-D toy, the peers, a picture.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of ``demo``.

    Returns
    -------
    int
        The exit status, 0.
    """
    if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
        # Checked before the fits, not after them.
        raise UsageError(f"--output {args.output} is a file; the demo writes into a folder")
    X = make_toy(args.dataset, args.n_samples, random_state=0)
    X_test = make_toy(args.dataset, 5000, random_state=1)
    truth = float(toy_log_density(args.dataset, X_test).mean())
    print(f"data set: {args.dataset} ({len(X)} training, {len(X_test)} held-out samples)")
    print("held-out mean log-likelihood per sample (nats; higher is better)")
    print(f"  {'true density':<40} {truth:8.3f}")
    models: dict[str, object] = {}
    for objective in args.objectives:
        name = "EBFlowDensity()" if objective == "auto" else f"EBFlowDensity({objective!r})"
        model = EBFlowDensity(objective=objective, max_iter=args.max_iter, random_state=0)
        models[name] = _fit_and_report(name, model, X, X_test)
    for name, model in _baselines(X).items():
        models[name] = model
        print(f"  {name:<40} {float(np.mean(model.score_samples(X_test))):8.3f}")
    if args.output:
        _plot(args, X, models)
    if args.table != "none":
        _table(args)
    return 0


def _fit_and_report(
    name: str, model: EBFlowDensity, X: np.ndarray, X_test: np.ndarray
) -> EBFlowDensity:
    """Fit ``model`` (capped fits need no ConvergenceWarning here) and print its line."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)
    elapsed = time.perf_counter() - start
    print(
        f"  {name:<40} {model.score(X_test):8.3f}   "
        f"({model.architecture_}, {model.objective_}, {model.n_iter_} epochs, {elapsed:.1f} s)"
    )
    return model


def _table(args: argparse.Namespace) -> None:
    """Fit the default flow and the peers on a real table; print and picture them."""
    X, X_test = load_table(args.table, random_state=0)
    print(
        f"\ndata set: {args.table} ({len(X)} training, {len(X_test)} held-out rows of "
        f"{X.shape[1]} columns, dequantized; scikit-learn's bundled table)"
    )
    print("held-out mean log-likelihood per row (nats; higher is better)")
    model = EBFlowDensity(random_state=0)
    if args.table_max_iter is not None:
        model.set_params(max_iter=args.table_max_iter)
    models: dict[str, object] = {
        "EBFlowDensity()": _fit_and_report("EBFlowDensity()", model, X, X_test)
    }
    scores = {"EBFlowDensity()": model.score(X_test)}
    for name, peer in _baselines(X).items():
        models[name] = peer
        scores[name] = float(np.mean(peer.score_samples(X_test)))
        print(f"  {name:<40} {scores[name]:8.3f}")
    if args.output and args.table == "digits":
        _plot_digits(args, X_test, models, scores)


def _plot_digits(
    args: argparse.Namespace,
    X_test: np.ndarray,
    models: dict[str, object],
    scores: dict[str, float],
) -> None:
    """Save held-out digits above each model's samples (when matplotlib is there)."""
    plt = _pyplot()
    if plt is None:
        return
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = [("held-out digits", X_test[:10])]
    rows += [
        (f"{name.split('(')[0]}\n{scores[name]:.1f} nats", model.sample(10, random_state=0))
        for name, model in models.items()
    ]
    fig, axes = plt.subplots(len(rows), 10, figsize=(8.0, 1.0 * len(rows) + 0.4))
    for row, (title, images) in enumerate(rows):
        for column in range(10):
            ax = axes[row, column]
            # dequantized pixels lie in [0, 17): values outside are clipped for display
            ax.imshow(np.clip(images[column], 0, 17).reshape(8, 8), cmap="gray_r", vmin=0, vmax=17)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(
        "digits: held-out images, then samples of each model (its held-out log-likelihood)",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "demo-digits.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    info(f"picture of held-out digits and samples: {path}")


def _pyplot() -> object:
    """Return matplotlib's pyplot on the Agg backend, or None (and say so) without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        info("matplotlib is not installed: no picture (pip install 'skebflow[examples]').")
        return None
    return plt


def _plot(args: argparse.Namespace, X: np.ndarray, models: dict[str, object]) -> None:
    """Save a picture of every model's density and samples (when matplotlib is there)."""
    plt = _pyplot()
    if plt is None:
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
    info(f"picture of the densities and samples: {path}")
