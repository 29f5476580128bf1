"""``bench scale``: fit time and held-out likelihood of the default as the data grow.

The default ``EBFlowDensity()`` and a BIC-selected ``GaussianMixture`` (the peer a user
would otherwise pick at these sizes; :func:`skebflow.bench._baselines.gmm_bic`) are fitted
one after the other, in the same process and with the same threads, on growing samples
of a Gaussian-mixture teacher (:func:`skebflow.datasets.make_mixture_teacher`, 5
components) at several dimensions, and scored on the same fresh rows. Reported per size:
the fit time of each, their ratio, the held-out log-likelihood in nats per sample, and
the default's epochs; plotted: time against the number of rows.

Examples
--------
>>> rows = run_scale(sizes=(300,), features=(2,), quick=True)
>>> sorted(row["method"] for row in rows)
['EBFlow', 'GaussianMixture']
>>> all(row["seconds"] > 0 and np.isfinite(row["held_out"]) for row in rows)
True
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from skebflow.bench._baselines import gmm_bic
from skebflow.datasets import make_mixture_teacher, sample_mixture_teacher
from skebflow.estimators import EBFlowDensity

__all__ = ["SCALE_FEATURES", "SCALE_SIZES", "plot_scale", "run_scale", "scale_markdown"]

#: Training rows of the full run.
SCALE_SIZES = (1_000, 10_000, 100_000, 1_000_000)
#: Dimensions of the full run.
SCALE_FEATURES = (2, 8, 32)
#: Fresh rows every model is scored on (fewer with ``quick``).
TEST_ROWS = 20_000
_QUICK_TEST_ROWS = 500
_QUICK_EPOCHS = 2
METHODS = ("EBFlow", "GaussianMixture")


def _fit(method: str, train: np.ndarray, seed: int, quick: bool) -> tuple[object, dict]:
    """Fit one model; return it and what to record about it."""
    if method == "GaussianMixture":
        model = gmm_bic(train, seed)
        return model, {"n_components": model.info["n_components"]}
    model = EBFlowDensity(random_state=seed, **({"max_iter": _QUICK_EPOCHS} if quick else {}))
    model.fit(train)
    return model, {"epochs": model.n_iter_, "batch_size": model.batch_size_}


def run_scale(
    *,
    sizes: Sequence[int] = SCALE_SIZES,
    features: Sequence[int] = SCALE_FEATURES,
    seeds: Sequence[int] = (0,),
    quick: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> list[dict]:
    """Fit the default and a BIC-selected GaussianMixture at every size and dimension.

    Parameters
    ----------
    sizes : sequence of int
        Numbers of training rows.
    features : sequence of int
        Dimensions of the teacher.
    seeds : sequence of int
        Seeds of the training sample and of both models (the teacher and the fresh rows
        are fixed per dimension).
    quick : bool
        Two epochs and 500 fresh rows: a smoke run.
    log : callable
        Receives one line per fit.

    Returns
    -------
    list of dict
        One row per size, dimension, seed and method: ``seconds`` (the fit),
        ``held_out`` (mean log-likelihood of the fresh rows), and the model's details.
    """
    rows = []
    for n_features in features:
        teacher = make_mixture_teacher(n_features, random_state=0)
        test_rows = _QUICK_TEST_ROWS if quick else TEST_ROWS
        test = sample_mixture_teacher(teacher, test_rows, random_state=10**6)
        for n in sizes:
            for seed in seeds:
                train = sample_mixture_teacher(teacher, n, random_state=seed)
                for method in METHODS:
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model, extra = _fit(method, train, seed, quick)
                    seconds = time.perf_counter() - start
                    held_out = float(np.mean(model.score_samples(test)))
                    rows.append(
                        {
                            "method": method,
                            "n_train": n,
                            "n_features": n_features,
                            "seed": seed,
                            "seconds": seconds,
                            "held_out": held_out,
                            **extra,
                        }
                    )
                    log(
                        f"D={n_features} n={n:,} seed {seed} {method}: {seconds:.1f} s, "
                        f"held-out {held_out:.4f}"
                    )
    return rows


def scale_markdown(rows: list[dict]) -> str:
    """Return the table: per dimension and size, each method's time and held-out score."""
    lines = [
        "| D | rows | EBFlow: s (epochs) | GaussianMixture (BIC): s (k) | time ratio | "
        "held-out EBFlow | held-out GaussianMixture |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((row["n_features"], row["n_train"]) for row in rows))
    for n_features, n in keys:
        cell = {
            method: [
                r
                for r in rows
                if (r["n_features"], r["n_train"], r["method"]) == (n_features, n, method)
            ]
            for method in METHODS
        }
        flow, gmm = cell["EBFlow"], cell["GaussianMixture"]
        flow_s, gmm_s = np.mean([r["seconds"] for r in flow]), np.mean([r["seconds"] for r in gmm])
        epochs = "/".join(str(r["epochs"]) for r in flow)
        k = "/".join(str(r["n_components"]) for r in gmm)
        lines.append(
            f"| {n_features} | {n:,} | {flow_s:.1f} ({epochs}) | {gmm_s:.1f} ({k}) | "
            f"{flow_s / gmm_s:.1f}× | {np.mean([r['held_out'] for r in flow]):.4f} | "
            f"{np.mean([r['held_out'] for r in gmm]):.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot_scale(rows: list[dict], path: Path) -> Path | None:
    """Plot fit time against training rows (log-log), one line per method and dimension.

    Returns the path written, or ``None`` without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"EBFlow": "-o", "GaussianMixture": "--s"}  # one colour per dimension
    for index, n_features in enumerate(dict.fromkeys(row["n_features"] for row in rows)):
        for method in METHODS:
            mine = [r for r in rows if r["n_features"] == n_features and r["method"] == method]
            sizes = sorted({r["n_train"] for r in mine})
            seconds = [np.mean([r["seconds"] for r in mine if r["n_train"] == n]) for n in sizes]
            label = f"{method}, D = {n_features}"
            ax.plot(sizes, seconds, styles[method], color=f"C{index}", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training rows")
    ax.set_ylabel("fit time (s)")
    ax.set_title("Fit time of the default against a BIC-selected GaussianMixture")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
