"""``bench detector``: the share of fresh inliers each outlier detector flags.

A detector's ``contamination`` is a promise about data it has not seen: about that share
of new points like the training data should be flagged. This benchmark fits each
detector on inliers only and counts how many fresh inliers, drawn from the same
distribution and never trained on, it flags, for several contaminations:
``EBFlowOutlierDetector`` with its held-out threshold (the default) and with
``novelty=False`` (scikit-learn's rule of the training scores), beside
``IsolationForest`` and ``LocalOutlierFactor(novelty=True)``. Nothing is downloaded:
scikit-learn's bundled tables (split at random per seed) and generated data.

Examples
--------
>>> rows = run_detector(datasets=("moons",), seeds=(0,), contaminations=(0.1,), quick=True)
>>> sorted({row["method"] for row in rows})  # doctest: +NORMALIZE_WHITESPACE
['EBFlow (held-out)', 'EBFlow (training)', 'IsolationForest', 'LocalOutlierFactor']
>>> all(0.0 <= row["flagged"] <= 1.0 for row in rows)
True
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.datasets import load_breast_cancer, make_moons
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from skebflow.datasets import load_table, make_mixture_teacher, sample_mixture_teacher
from skebflow.estimators import EBFlowDensity, EBFlowOutlierDetector

__all__ = ["DETECTOR_DATASETS", "detector_markdown", "run_detector"]

#: The data sets: inliers only, as (training rows, fresh rows).
DETECTOR_DATASETS = ("breast-cancer", "digits", "wine", "mixture-8", "moons")
METHODS = ("EBFlow (held-out)", "EBFlow (training)", "IsolationForest", "LocalOutlierFactor")


def _split(X: np.ndarray, n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(X))
    return X[order[:n_train]], X[order[n_train:]]


def _data(name: str, seed: int, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return (training inliers, fresh inliers) of data set ``name``."""
    if name == "breast-cancer":  # benign tumours, log1p of the measurements
        data = load_breast_cancer()
        # As load_table: without the concavity columns (exact zeros in 13 rows).
        keep = ["concav" not in name for name in data.feature_names]
        return _split(np.log1p(data.data[data.target == 1][:, keep]), 250, seed)
    if name in ("digits", "wine"):  # dequantized (load_table); train and test pooled
        train, test = load_table(name, random_state=seed)
        return _split(np.vstack([train, test]), int(0.75 * (len(train) + len(test))), seed)
    if name == "mixture-8":
        teacher = make_mixture_teacher(8, random_state=0)
        n = 500 if quick else 2000
        return sample_mixture_teacher(teacher, n, random_state=seed), sample_mixture_teacher(
            teacher, 5000, random_state=seed + 1000
        )
    if name == "moons":
        n = 300 if quick else 1000
        X, _ = make_moons(n + 5000, noise=0.1, random_state=seed)
        return X[:n], X[n:]
    raise ValueError(f"unknown data set {name!r}; choose from {DETECTOR_DATASETS}.")


def _detector(method: str, contamination: float, seed: int, quick: bool) -> object:
    flow = EBFlowDensity(random_state=seed, **({"max_iter": 5} if quick else {}))
    if method == "EBFlow (held-out)":
        return EBFlowOutlierDetector(estimator=flow, contamination=contamination)
    if method == "EBFlow (training)":
        return EBFlowOutlierDetector(estimator=flow, contamination=contamination, novelty=False)
    if method == "IsolationForest":
        return IsolationForest(contamination=contamination, random_state=seed)
    return LocalOutlierFactor(novelty=True, contamination=contamination)


def run_detector(
    *,
    datasets: Sequence[str] = DETECTOR_DATASETS,
    seeds: Sequence[int] = (0, 1),
    contaminations: Sequence[float] = (0.01, 0.05, 0.1),
    methods: Sequence[str] = METHODS,
    quick: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> list[dict]:
    """Fit every detector on inliers and return the share of fresh inliers it flags.

    Returns one row per data set, seed, contamination and method: ``flagged`` (the
    share of fresh inliers predicted -1), ``seconds`` (the fit), ``calibration`` (what
    set an EBFlow threshold) and the sizes.
    """
    rows = []
    for name in datasets:
        for seed in seeds:
            train, fresh = _data(name, seed, quick)
            for contamination in contaminations:
                for method in methods:
                    detector = _detector(method, contamination, seed, quick)
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        detector.fit(train)
                    seconds = time.perf_counter() - start
                    flagged = float(np.mean(detector.predict(fresh) == -1))
                    rows.append(
                        {
                            "dataset": name,
                            "seed": seed,
                            "contamination": contamination,
                            "method": method,
                            "flagged": flagged,
                            "seconds": seconds,
                            "calibration": getattr(detector, "calibration_", None),
                            "n_train": len(train),
                            "n_fresh": len(fresh),
                            "n_features": train.shape[1],
                        }
                    )
                    log(
                        f"{name} seed {seed} c={contamination:g} {method}: "
                        f"{flagged:.1%} of fresh inliers flagged ({seconds:.1f} s)"
                    )
    return rows


def detector_markdown(rows: list[dict]) -> str:
    """Return the table: mean flagged share per data set and contamination, per method."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    keys = list(dict.fromkeys((row["dataset"], row["contamination"]) for row in rows))
    lines = [
        "| data (train / fresh rows, D) | contamination | "
        + " | ".join(methods)
        + " | EBFlow threshold from |",
        "|---|---|" + "---|" * len(methods) + "---|",
    ]
    for dataset, contamination in keys:
        cells = [r for r in rows if (r["dataset"], r["contamination"]) == (dataset, contamination)]
        first = cells[0]
        shares = []
        for method in methods:
            values = [r["flagged"] for r in cells if r["method"] == method]
            shares.append(f"{100 * np.mean(values):.1f} %")
        how = sorted({r["calibration"] for r in cells if r["method"] == "EBFlow (held-out)"})
        size = f"{dataset} ({first['n_train']} / {first['n_fresh']}, {first['n_features']})"
        lines.append(
            f"| {size} | {contamination:g} | " + " | ".join(shares) + f" | {', '.join(how)} |"
        )
    seconds = {m: np.mean([r["seconds"] for r in rows if r["method"] == m]) for m in methods}
    lines += ["", "Mean fit time: " + ", ".join(f"{m} {s:.2f} s" for m, s in seconds.items())]
    return "\n".join(lines) + "\n"
