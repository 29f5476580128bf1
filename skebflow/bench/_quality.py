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

__all__ = ["DEFAULT_MODELS", "EBFLOW_MODELS", "IMAGE_MODELS", "run_quality"]

_SCORE_OBJECTIVES = ("ssm", "dsm", "fdssm")
#: The EBFlow rows: the default estimator, each score-matching objective, and polished.
EBFLOW_MODELS: tuple[str, ...] = (
    "EBFlow",
    *(f"EBFlow-{o}" for o in _SCORE_OBJECTIVES),
    *(f"EBFlow-{o}+ml" for o in _SCORE_OBJECTIVES),
)
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
    start = time.perf_counter()
    model = None
    try:
        model = fit()
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
        model = None
    record.setdefault("fit_seconds", time.perf_counter() - start)
    return model, record


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
        records.append(record)
    return records


def _line(record: dict) -> str:
    outcome = record["error"] if record["status"] != "ok" else f"{record['loglik']:.4f}"
    truth = f" (truth {record['true_loglik']:.4f})" if "true_loglik" in record else ""
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
