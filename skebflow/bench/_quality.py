"""``bench quality``: held-out log-likelihood of ``EBFlowDensity`` against standard peers.

Every model is fitted to the same training sample and scored on the same held-out sample,
for several seeds (each seed draws new data, a new split and new dequantization noise,
and seeds every estimator). Reported: the mean held-out log-likelihood in nats per
sample (mean, standard deviation and range over seeds), fit time, and where the density
is known, the exact truth and the excess NLL ``mean(log p_true - log p_model)`` (an
unbiased estimate of KL(truth ‖ model); per dimension for the teachers).

Data sets (:func:`make_quality_sets`):

* ``toys``: the 2-D toys checkerboard, rings, gaussians, pinwheel, moons and swirl of
  :mod:`skebflow.datasets._toys` (exact densities);
* ``tables``: digits, breast cancer, wine, iris and diabetes (:func:`load_table`, a
  75/25 split per seed), dequantized at their recording resolution; every model trains
  on and is scored on the *same* dequantized values (digits: nats per image of
  ``x + u``, ``u ~ U[0, 1)^64``);
* ``teachers``: random Gaussian mixtures with full covariances
  (:func:`skebflow.datasets._teachers.make_mixture_teacher`, 5 components) at D = 4, 16, 64.

Models (``fit(train, seed) -> object with score_samples``): ``EBFlow`` is
``EBFlowDensity(random_state=seed)``, the estimator's defaults; ``EBFlow-<o>`` sets
``objective=o`` for the score-matching objectives, and ``EBFlow-<o>+ml`` continues that
fit by maximum likelihood (``warm_start``, 20 % of its epochs; the time includes both
parts). The peers are passed in by :mod:`skebflow.bench._cli` (KernelDensity and a
BIC-selected GaussianMixture, its scikit-learn layer) and :mod:`skebflow.bench._peers`
(a zuko NSF, skipped with its reason when zuko is missing). The image rows
(:data:`IMAGE_MODELS`: ``EBFlow-conv``, ``EBFlow-glow`` and their ``-ssm`` and ``-dsm``
variants) fit ``architecture="conv"`` or ``"glow"`` with the data set's ``image_shape``
and ``preprocessing="logit"`` on its box (digits only; skipped elsewhere). Digits rows
also get bits per dimension in the report. A fit that raises is recorded with its error
and never stops the benchmark.

Recorded besides, for choosing an objective:

* against maximum likelihood, per EBFlow row and seed: the held-out log-likelihood minus
  that of its ML row on the same data (:func:`ml_reference`: ``EBFlow`` for the tabular
  rows, ``EBFlow-conv`` or ``EBFlow-glow`` for the image rows), in nats per sample and per
  dimension, and the NLL's excess over ML's as a percentage of ``|NLL_ML|``;
* whether the fit warned with a :class:`~skebflow.exceptions.DivergenceWarning`, and
  whether it raised a ``FloatingPointError`` (a failed fit, with its error);
* on the 2-D sets, the mass of the fitted density on the box 1.5 times the training data's
  range per axis (:func:`expanded_box`, :func:`grid_integral`: 300 × 300 cells), about 1
  for a density that keeps its mass near the data. The KernelDensity peer gets it only up
  to :data:`GRID_KDE_MAX_TRAIN` training points (each of the 90,000 grid points costs a
  kernel per training point).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from skebflow.bench._peers import NSF_CONFIG, PeerUnavailableError, fit_nsf
from skebflow.bench._tasks import QualitySet
from skebflow.estimators import EBFlowDensity
from skebflow.exceptions import DivergenceWarning

__all__ = [
    "DEFAULT_MODELS",
    "EBFLOW_MODELS",
    "GRID_EXPANSION",
    "GRID_KDE_MAX_TRAIN",
    "GRID_POINTS",
    "IMAGE_MODELS",
    "OBJECTIVE_MODELS",
    "expanded_box",
    "grid_integral",
    "ml_reference",
    "run_quality",
]

_SCORE_OBJECTIVES = ("ssm", "dsm", "fdssm")
#: The EBFlow rows: the default estimator, each score-matching objective, and polished.
EBFLOW_MODELS: tuple[str, ...] = (
    "EBFlow",
    *(f"EBFlow-{o}" for o in _SCORE_OBJECTIVES),
    *(f"EBFlow-{o}+ml" for o in _SCORE_OBJECTIVES),
)
#: The score-matching comparison: the default (ML) and each objective alone, unpolished.
OBJECTIVE_MODELS: tuple[str, ...] = EBFLOW_MODELS[: 1 + len(_SCORE_OBJECTIVES)]
#: The rows of a plain run: the default estimator and the peers.
DEFAULT_MODELS: tuple[str, ...] = ("EBFlow", "KernelDensity", "GaussianMixture", "NSF")
#: Image flows (data sets with an ``image_shape`` only): ``EBFlow-<architecture>`` is
#: trained by the estimator's ``objective="auto"`` (ML on small images), the others by
#: the named score-matching objective.
IMAGE_MODELS: tuple[str, ...] = tuple(
    f"EBFlow-{a}{o}" for a in ("conv", "glow") for o in ("", "-ssm", "-dsm")
)
#: Length of the ML polish, as a fraction of the epochs of the score-matching fit.
POLISH_FRACTION = 0.2
_QUICK_EPOCHS = 2
#: Cells per axis of the grid integral on the 2-D sets.
GRID_POINTS = 300
#: Box of the grid integral: the training data's range per axis, its half-widths times this.
GRID_EXPANSION = 1.5
#: The KernelDensity peer's grid integral is computed up to this many training points.
GRID_KDE_MAX_TRAIN = 2000


# ------------------------------------------------------------------------- grid integral
def expanded_box(X: np.ndarray, factor: float = GRID_EXPANSION) -> tuple[np.ndarray, np.ndarray]:
    """Return the box around the range of ``X`` per axis, its half-widths times ``factor``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The data (the training sample).
    factor : float, default=1.5
        Scale of the half-widths about the centre of the range.

    Returns
    -------
    low, high : ndarray of shape (n_features,)
        The corners of the box.

    Examples
    --------
    >>> low, high = expanded_box(np.array([[0.0, -1.0], [2.0, 1.0]]))
    >>> low.tolist(), high.tolist()
    ([-0.5, -1.5], [2.5, 1.5])
    """
    X = np.asarray(X, dtype=np.float64)
    centre = (X.max(axis=0) + X.min(axis=0)) / 2
    half = factor * (X.max(axis=0) - X.min(axis=0)) / 2
    return centre - half, centre + half


def grid_integral(
    log_density: Callable[[np.ndarray], np.ndarray],
    low: np.ndarray,
    high: np.ndarray,
    n: int = GRID_POINTS,
) -> float:
    """Integrate ``exp(log_density)`` over a box by the midpoint rule on ``n`` cells per axis.

    Parameters
    ----------
    log_density : callable
        ``log_density(points) -> log p``, points of shape ``(n ** D, D)`` (a model's
        ``score_samples``).
    low, high : array-like of shape (D,)
        Corners of the box. Meant for D = 2 (``n ** D`` evaluations).
    n : int, default=300
        Cells per axis; the density is evaluated at their centres.

    Returns
    -------
    float
        The mass of the density in the box: about 1 for a density whose mass lies in it.

    Raises
    ------
    FloatingPointError
        When a log-density on the grid is NaN or ``+inf`` (``-inf``, zero density, is
        fine).

    Examples
    --------
    >>> def gaussian(x):
    ...     return -0.5 * (x**2).sum(axis=1) - np.log(2 * np.pi)
    >>> round(grid_integral(gaussian, [-8.0, -8.0], [8.0, 8.0]), 6)
    1.0
    >>> round(grid_integral(gaussian, [0.0, -8.0], [8.0, 8.0]), 6)
    0.5
    """
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    steps = (high - low) / n
    axes = [lo + step * (np.arange(n) + 0.5) for lo, step in zip(low, steps, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
    values = np.asarray(log_density(points), dtype=np.float64)
    bad = int(np.sum(np.isnan(values) | (values == np.inf)))
    if bad:
        raise FloatingPointError(f"{bad} of {len(values)} grid log-densities are nan or +inf")
    return float(np.exp(values).sum() * np.prod(steps))


# ------------------------------------------------------------------------------- fitting
def _quiet(model: EBFlowDensity, train: np.ndarray) -> EBFlowDensity:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EBFlowDensity stopped after max_iter")
        return model.fit(train)


def _ebflow(objective: str | None, train: np.ndarray, seed: int, quick: bool) -> EBFlowDensity:
    params: dict = {"random_state": seed}
    if objective is not None:
        params["objective"] = objective
    if quick:
        params["max_iter"] = _QUICK_EPOCHS
    return _quiet(EBFlowDensity(**params), train)


def _image_flow(
    qset: QualitySet, name: str, train: np.ndarray, seed: int, quick: bool
) -> EBFlowDensity:
    """``EBFlow-conv``, ``EBFlow-glow-ssm``, ...: an image flow with the logit chain."""
    if qset.image_shape is None:
        raise PeerUnavailableError(f"{qset.name} is not an image data set")
    architecture, _, objective = name.removeprefix("EBFlow-").partition("-")
    params: dict = {"architecture": architecture, "image_shape": qset.image_shape}
    params.update(preprocessing="logit", bounds=qset.bounds, random_state=seed)
    if objective:
        params["objective"] = objective
    if quick:
        params["max_iter"] = _QUICK_EPOCHS
    return _quiet(EBFlowDensity(**params), train)


def _polish(model: EBFlowDensity, train: np.ndarray) -> EBFlowDensity:
    epochs = max(1, round(POLISH_FRACTION * model.n_iter_))
    polished = copy.deepcopy(model).set_params(objective="ml", warm_start=True, max_iter=epochs)
    return _quiet(polished, train)


def _extra(model: object) -> dict:
    """Return what a fitted model chose: epochs, bandwidth, components, ..."""
    if isinstance(model, EBFlowDensity):
        return {"n_iter": model.n_iter_, "n_skipped_steps": model.n_skipped_steps_}
    if hasattr(model, "validation_scores"):  # the NSF peer
        return {"n_iter": model.n_epochs, "best_epoch": model.best_epoch}
    return dict(getattr(model, "info", {}))


def _measure(
    qset: QualitySet,
    name: str,
    seed: int,
    data: tuple,
    fit: Callable[[], object],
) -> tuple[object | None, dict]:
    """Fit (timed), score, record; a failure or a missing dependency becomes the record."""
    train, test, truth = data
    record = {"dataset": qset.name, "group": qset.group, "features": qset.features}
    record.update(model=name, seed=seed, n_train=len(train), n_test=len(test))
    record.update(status="ok", error=None)
    if name.startswith("EBFlow"):
        record.update(ml_reference=ml_reference(name), diverged=False, divergence_warnings=[])
    record["floating_point_error"] = False
    start = time.perf_counter()
    model = None
    try:
        model = _recording_divergence(fit, record)
        record["fit_seconds"] = time.perf_counter() - start
        values = np.asarray(model.score_samples(test), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise FloatingPointError("non-finite held-out log-density")
        record.update(_extra(model))
        record.update(
            loglik=float(values.mean()), loglik_se=float(values.std() / len(values) ** 0.5)
        )
        if truth is not None:
            record.update(true_loglik=float(truth.mean()), excess=float(np.mean(truth - values)))
            record["excess_per_dim"] = record["excess"] / qset.features
    except PeerUnavailableError as exc:
        record.update(status="skipped", error=str(exc))
        model = None
    except (FloatingPointError, RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        record["floating_point_error"] = isinstance(exc, FloatingPointError)
        model = None
    record.setdefault("fit_seconds", time.perf_counter() - start)
    if model is not None and qset.features == 2:
        _record_grid_integral(name, model, train, record)
    return model, record


def _recording_divergence(fit: Callable[[], object], record: dict) -> object:
    """Run ``fit``; note its DivergenceWarnings in ``record``, pass the other warnings on."""
    seen: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", DivergenceWarning)
            return fit()
    finally:  # also when the fit raised; outside the recording, so the others are shown
        for w in seen:
            if issubclass(w.category, DivergenceWarning):
                record["diverged"] = True
                record.setdefault("divergence_warnings", []).append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _record_grid_integral(name: str, model: object, train: np.ndarray, record: dict) -> None:
    """Record the mass of the fitted density on the expanded box of the training data."""
    if name == "KernelDensity" and len(train) > GRID_KDE_MAX_TRAIN:
        record["grid_integral_skipped"] = f"KernelDensity on more than {GRID_KDE_MAX_TRAIN} points"
        return
    try:
        record["grid_integral"] = grid_integral(model.score_samples, *expanded_box(train))
    except (FloatingPointError, RuntimeError, ValueError) as exc:
        record["grid_integral_error"] = f"{type(exc).__name__}: {exc}"


def _run_pair(
    qset: QualitySet,
    seed: int,
    models: tuple[str, ...],
    peers: Mapping[str, Callable[[np.ndarray, int], object]],
    threads: int | None,
    quick: bool,
) -> list[dict]:
    """All models on one (data set, seed), in this process, each fit timed here."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            return _models_on(qset, seed, models, peers, quick)
    finally:
        torch.set_num_threads(previous)


def _models_on(
    qset: QualitySet,
    seed: int,
    models: tuple[str, ...],
    peers: Mapping[str, Callable[[np.ndarray, int], object]],
    quick: bool,
) -> list[dict]:
    data = qset.draw(seed)
    train = data[0]
    nsf = {**NSF_CONFIG, "max_epochs": _QUICK_EPOCHS} if quick else NSF_CONFIG
    fits: dict[str, Callable[[], object]] = {
        name: (lambda fit=fit: fit(train, seed)) for name, fit in peers.items()
    }
    fits["NSF"] = lambda: fit_nsf(train, seed, **nsf)
    fits["EBFlow"] = lambda: _ebflow(None, train, seed, quick)
    for name in IMAGE_MODELS:
        fits[name] = lambda name=name: _image_flow(qset, name, train, seed, quick)
    records = [_measure(qset, name, seed, data, fits[name])[1] for name in models if name in fits]
    for objective in _SCORE_OBJECTIVES:
        base, polished = f"EBFlow-{objective}", f"EBFlow-{objective}+ml"
        if base not in models and polished not in models:
            continue
        fit = lambda objective=objective: _ebflow(objective, train, seed, quick)  # noqa: E731
        model, first = _measure(qset, base, seed, data, fit)
        if base in models:
            records.append(first)
        if polished not in models:
            continue
        if model is None:  # the score-matching fit failed: so does its polish
            records.append({**first, "model": polished})
            continue
        _, record = _measure(qset, polished, seed, data, lambda m=model: _polish(m, train))
        record["fit_seconds"] += first["fit_seconds"]
        record["n_iter"] = record.get("n_iter", 0) + model.n_iter_
        record["diverged"] = first["diverged"] or record["diverged"]
        record["divergence_warnings"] = first["divergence_warnings"] + record["divergence_warnings"]
        records.append(record)
    _add_ml_gaps(records)
    return records


def ml_reference(name: str) -> str:
    """Name the maximum-likelihood row an EBFlow row is compared with.

    Parameters
    ----------
    name : str
        An EBFlow row: one of :data:`EBFLOW_MODELS` or :data:`IMAGE_MODELS`.

    Returns
    -------
    str
        ``"EBFlow"`` for the tabular rows; the image architecture's own row
        (``"EBFlow-conv"``, ``"EBFlow-glow"``: ML on these sizes) for the image rows.

    Examples
    --------
    >>> ml_reference("EBFlow-dsm+ml"), ml_reference("EBFlow-glow-ssm")
    ('EBFlow', 'EBFlow-glow')
    """
    if name in IMAGE_MODELS:
        return "EBFlow-" + name.removeprefix("EBFlow-").partition("-")[0]
    return "EBFlow"


def _add_ml_gaps(records: list[dict]) -> None:
    """Add each EBFlow row's gap to its ML row (same data set and seed) to its record."""
    lls = {r["model"]: r["loglik"] for r in records if r["status"] == "ok"}
    for record in records:
        reference = record.get("ml_reference")
        if record["status"] != "ok" or reference in (None, record["model"]) or reference not in lls:
            continue
        ml = lls[reference]
        gap = record["loglik"] - ml
        record.update(gap_to_ml=gap, gap_to_ml_per_dim=gap / record["features"])
        if ml != 0.0:
            record["nll_gap_to_ml_percent"] = 100.0 * -gap / abs(ml)


def _line(record: dict) -> str:
    outcome = record["error"] if record["status"] != "ok" else f"{record['loglik']:.4f}"
    truth = f" (truth {record['true_loglik']:.4f})" if "true_loglik" in record else ""
    if "gap_to_ml" in record:
        truth += f" ({record['gap_to_ml']:+.4f} vs {record['ml_reference']})"
    if "grid_integral" in record:
        truth += f" (grid mass {record['grid_integral']:.4f})"
    if record.get("diverged"):
        truth += " (DivergenceWarning)"
    return (
        f"{record['dataset']} seed {record['seed']} {record['model']}: {outcome}{truth} "
        f"[{record['fit_seconds']:.1f} s]"
    )


def run_quality(
    sets: list[QualitySet],
    *,
    models: tuple[str, ...] = DEFAULT_MODELS,
    seeds: tuple[int, ...] = (0, 1, 2),
    peers: Mapping[str, Callable[[np.ndarray, int], object]] | None = None,
    jobs: int = 1,
    threads: int | None = 1,
    quick: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Fit every model on every (data set, seed) and score its held-out sample.

    Parameters
    ----------
    sets : list of QualitySet
        From :func:`make_quality_sets`.
    models : tuple of str, default=DEFAULT_MODELS
        Row names: any of :data:`EBFLOW_MODELS`, :data:`IMAGE_MODELS` (skipped on data
        sets without an image shape), ``"NSF"`` and the keys of ``peers``.
    seeds : tuple of int, default=(0, 1, 2)
        Seeds of the data and of every estimator.
    peers : mapping of str to callable, optional
        ``fit(train, seed) -> model with score_samples`` (``skebflow.bench._cli`` passes
        KernelDensity and GaussianMixture).
    jobs : int, default=1
        Worker processes (joblib) over (data set, seed) pairs; each fit is timed in
        its own process.
    threads : int or None, default=1
        torch and BLAS threads per process (``None``: leave them).
    quick : bool, default=False
        2 epochs for every flow.
    log : callable, default=print
        Receives one line per fit.

    Returns
    -------
    list of dict
        One record per (data set, model, seed): ``status`` (``"ok"``, ``"failed"`` or
        ``"skipped"``), ``error``, ``fit_seconds``, ``loglik``, ``loglik_se`` (test
        sampling), for known densities ``true_loglik``, ``excess``, ``excess_per_dim``,
        and what the model chose (``n_iter``, ``bandwidth``, ``n_components``, ...).
        Also ``floating_point_error`` (the fit or its scores raised a
        ``FloatingPointError``: a failed fit). EBFlow rows add ``ml_reference`` (see
        :func:`ml_reference`), ``diverged`` and ``divergence_warnings`` (the messages of
        the fit's :class:`~skebflow.exceptions.DivergenceWarning`; a ``+ml`` row's cover
        both of its fits) and, when both it and its ML row succeeded, ``gap_to_ml``
        (``loglik`` minus the ML row's, nats per sample), ``gap_to_ml_per_dim`` and
        ``nll_gap_to_ml_percent`` (``100 (NLL - NLL_ML) / |NLL_ML|``). On 2-D sets:
        ``grid_integral`` (:func:`grid_integral` over :func:`expanded_box` of the training
        data), or ``grid_integral_skipped`` or ``grid_integral_error`` saying why not.
    """
    peers = dict(peers or {})
    known = set(EBFLOW_MODELS) | set(IMAGE_MODELS) | {"NSF"} | set(peers)
    unknown = sorted(set(models) - known)
    if unknown:
        raise ValueError(f"Unknown models {unknown}; valid: {sorted(known)}.")
    # Largest first, so that two workers finish together.
    pairs = sorted(
        ((s, seed) for s in sets for seed in seeds),
        key=lambda pair: -(pair[0].n_train or 1000) * math.sqrt(pair[0].features),
    )
    work = (delayed(_run_pair)(s, seed, models, peers, threads, quick) for s, seed in pairs)
    results: dict[tuple[str, int], list[dict]] = {}
    for records in Parallel(n_jobs=jobs, return_as="generator_unordered")(work):
        for record in records:
            log(_line(record))
        if records:
            results[records[0]["dataset"], records[0]["seed"]] = records
    return [r for s in sets for seed in seeds for r in results.get((s.name, seed), [])]
