"""``bench nll``: held-out negative log-likelihood of every objective against ML and baselines.

Every flow is an :class:`~skebflow.EBFlowDensity` (the product, with its early stopping and
EMA), fitted with the same architecture and budget for every objective, over several seeds.
``KernelDensity`` (bandwidth by 3-fold cross-validation over a grid) and
``GaussianMixture`` (full covariances, number of components by 3-fold cross-validation)
are fitted to the same training samples. Data sets:

* ``teacher``: samples of a random FC teacher flow
  (:func:`skebflow.datasets._teachers.make_teacher`), whose log-density is exact: the excess
  NLL ``mean(log p_true - log p_model)`` over test samples is an unbiased estimate of
  KL(truth ‖ model), reported in nats per dimension.
* ``toys``: the smoothed 2-D toys of :mod:`skebflow.datasets._toys` (exact densities), excess
  NLL in nats per sample.
* ``digits``: scikit-learn's 8×8 digits as integers in [0, 16], with the paper's chain
  (uniform dequantization, logit), fitted by the FC flow and, as ``digits-conv`` and
  ``digits-glow``, by the image flows (``image_shape=(1, 8, 8)``, their default depth, no
  ablations). NLL in nats per image and bits per dimension, of the
  dequantized density ``-mean log p(x + u)`` with ``u ~ U[0, 1)^64`` (the paper's
  convention, averaged over a few noise draws), and at the cell centre ``x + 0.5``
  (``EBFlowDensity.score``). Baselines are fitted to dequantized training data.
* ``bounded``: teacher samples squashed into :math:`(0, 1)^D` by a sigmoid, fitted with
  ``preprocessing="logit"`` (exact density, excess NLL in nats per dimension).

Remedy for the gap to ML: on ``teacher`` and ``digits`` every score-matching fit is
continued by a short maximum-likelihood polish (``warm_start``, 10 % of the epoch budget;
method names ending in ``+ml``, fit time includes the score-matching part). Every flow
runs with the estimator's defaults, so the score-matching objectives have the
singular-value barrier (``min_singular_value="auto"``); on ``teacher`` and ``digits``
they also run without it (``min_singular_value=None``, names ending in ``-sv``; polished:
``-sv+ml``).

The MaP ablation: on ``bounded`` and ``digits`` the score-matching objectives also run
with ``match_after_preprocessing=False`` (method names ending in ``-inside``), i.e. with
the preprocessing inside the flow, as in the paper's Table 4.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Mapping
from functools import partial

import numpy as np

from skebflow.bench._tasks import Task, _rng, format_number
from skebflow.estimators import EBFlowDensity

__all__ = ["NLL_GROUPS", "NLL_OBJECTIVES", "nll_markdown", "run_nll", "summarize"]

#: Objectives compared by ``bench nll`` (``"sm"`` can be added for D <= 100).
NLL_OBJECTIVES: tuple[str, ...] = ("ml", "sml", "ssm", "dsm", "fdssm")
#: ``fit(train, seed) -> fitted model with score_samples``: what a baseline is.
BaselineFit = Callable[[np.ndarray, int], object]
#: Suffix of a method trained with the preprocessing inside the flow (no MaP).
INSIDE_SUFFIX = "-inside"
#: Suffix of a score-matching fit followed by a short maximum-likelihood polish.
POLISH_SUFFIX = "+ml"
#: Length of the polish, as a fraction of the task's epoch budget.
POLISH_FRACTION = 0.1
#: Suffix of a score-matching fit without the (default) singular-value barrier.
NO_BARRIER_SUFFIX = "-sv"
_DIGITS_NOISE_DRAWS = 4


def _quiet_fit(model: EBFlowDensity, train: np.ndarray) -> EBFlowDensity:
    """Fit without the estimator's max_iter warning (epochs run are recorded instead)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EBFlowDensity stopped after max_iter")
        return model.fit(train)


def _fit(
    task: Task,
    method: str,
    train: np.ndarray,
    seed: int,
    device: str,
    dtype: str,
    baselines: Mapping[str, BaselineFit],
) -> tuple:
    """Fit one method; return the fitted model and extra record fields."""
    if method in baselines:
        data = train + _rng(2, seed).random(train.shape) if task.integer else train
        return baselines[method](data, seed), {}
    objective = method.removesuffix(INSIDE_SUFFIX).removesuffix(NO_BARRIER_SUFFIX)
    model = EBFlowDensity(
        objective=objective,
        match_after_preprocessing=not method.endswith(INSIDE_SUFFIX),
        min_singular_value=None if method.endswith(NO_BARRIER_SUFFIX) else "auto",
        random_state=seed,
        device=device,
        training_dtype=dtype,
        **task.params,
    )
    _quiet_fit(model, train)
    return model, {"n_iter": model.n_iter_, "n_skipped_steps": model.n_skipped_steps_}


def _polish(task: Task, model: EBFlowDensity, train: np.ndarray) -> tuple:
    """Continue a copy of a fitted model by a few epochs of maximum likelihood."""
    epochs = max(1, round(POLISH_FRACTION * task.params["max_iter"]))
    polished = copy.deepcopy(model).set_params(objective="ml", warm_start=True, max_iter=epochs)
    _quiet_fit(polished, train)
    return polished, {"n_iter": model.n_iter_ + polished.n_iter_}


def _run(
    task: Task,
    method: str,
    seed: int,
    test: np.ndarray,
    truth: np.ndarray | None,
    fit: Callable[[], tuple],
) -> tuple[object | None, dict]:
    """Fit (``fit() -> (model, extra)``), score, time; never raise for a failed fit."""
    record = {"task": task.name, "group": task.group, "features": task.features}
    record.update(method=method, seed=seed, status="ok", error=None)
    start = time.perf_counter()
    model = None
    try:
        model, extra = fit()
        values = _log_likelihoods(task, model, test, seed)
        record.update(extra)
        record.update(_metrics(task, values, truth))
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"non-finite held-out log-likelihood {values}")
    except (FloatingPointError, RuntimeError, ValueError) as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        model = None
    record["fit_seconds"] = time.perf_counter() - start
    return model, record


def _line(record: dict) -> str:
    shown = record.get("excess_per_dim", record.get("nll", record.get("loglik")))
    outcome = f"{shown:.4f}" if record["status"] == "ok" else record["error"][:70]
    return (
        f"{record['task']} seed {record['seed']} {record['method']}: {outcome} "
        f"({record['fit_seconds']:.1f} s, {record.get('n_iter', '-')} epochs)"
    )


def _log_likelihoods(task: Task, model: object, test: np.ndarray, seed: int) -> dict[str, float]:
    """Mean held-out log-likelihoods; for integer data, dequantized and at cell centres."""
    if not task.integer:
        return {"loglik": float(np.mean(model.score_samples(test)))}
    # The flow adds 0.5 itself (Dequantize.forward); the baselines see raw coordinates.
    shift = -0.5 if isinstance(model, EBFlowDensity) else 0.0
    rng = _rng(3, seed)
    draws = [
        np.mean(model.score_samples(test + rng.random(test.shape) + shift))
        for _ in range(_DIGITS_NOISE_DRAWS)
    ]
    centre = np.mean(model.score_samples(test + 0.5 + shift))
    return {"loglik": float(np.mean(draws)), "loglik_centre": float(centre)}


def _metrics(task: Task, values: dict[str, float], truth: np.ndarray | None) -> dict[str, float]:
    out = dict(values)
    if truth is not None:
        out["excess"] = float(np.mean(truth)) - values["loglik"]
        out["excess_per_dim"] = out["excess"] / task.features
    if task.integer:
        out["nll"] = -values["loglik"]
        out["nll_centre"] = -values["loglik_centre"]
        out["bits_per_dim"] = out["nll"] / (task.features * math.log(2.0))
    return out


def run_nll(
    tasks: list[Task],
    *,
    objectives: tuple[str, ...] = NLL_OBJECTIVES,
    seeds: tuple[int, ...] = (0, 1),
    baselines: Mapping[str, BaselineFit] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Fit every objective (and the baselines) on every task and seed; score held-out data.

    A fit that raises (divergence, a failed inversion) is recorded with its error and
    left out of the means; it never stops the benchmark.

    Parameters
    ----------
    tasks : list of Task
        From :func:`make_tasks`.
    objectives : tuple of str, default=NLL_OBJECTIVES
        ``EBFlowDensity`` objectives; those in a task's ``ablation`` also run as
        ``<objective>-inside``; those in a task's ``polish`` also get ``<objective>+ml``.
    seeds : tuple of int, default=(0, 1)
        Seeds of the training samples and of the estimators (test samples too, except
        for digits, whose split is shuffled by the seed).
    baselines : mapping of str to callable, optional
        Named baseline estimators, ``fit(train, seed) -> model`` with ``score_samples``
        (``skebflow.bench._cli`` passes KernelDensity and GaussianMixture); fitted to
        dequantized data for integer tasks.
    device, dtype : str
        ``EBFlowDensity(device=..., training_dtype=...)``.
    log : callable, default=print
        Receives one line per fit.

    Returns
    -------
    list of dict
        One record per (task, method, seed) with ``status`` (``"ok"`` or ``"failed"``),
        ``error``, ``fit_seconds``, ``loglik`` and, where defined, ``excess``,
        ``excess_per_dim``, ``nll``, ``nll_centre``, ``bits_per_dim``, ``n_iter``,
        ``n_skipped_steps``.
    """
    baselines = dict(baselines or {})
    records: list[dict] = []
    for task in tasks:
        inside = tuple(o + INSIDE_SUFFIX for o in objectives if o in task.ablation)
        unbarred = tuple(o + NO_BARRIER_SUFFIX for o in objectives if o in task.barrier)
        methods = tuple(objectives) + unbarred + inside
        methods += tuple(baselines) if task.baselines else ()
        for seed in seeds:
            train, test, truth = task.draw(seed)
            for method in methods:
                fit = partial(_fit, task, method, train, seed, device, dtype, baselines)
                model, record = _run(task, method, seed, test, truth, fit)
                records.append(record)
                log(_line(record))
                if method.removesuffix(NO_BARRIER_SUFFIX) in task.polish and model is not None:
                    name = method + POLISH_SUFFIX
                    polish = partial(_polish, task, model, train)
                    _, extra = _run(task, name, seed, test, truth, polish)
                    extra["fit_seconds"] += record["fit_seconds"]
                    records.append(extra)
                    log(_line(extra))
    return records


_METRICS = ("loglik", "excess", "excess_per_dim", "nll", "nll_centre", "bits_per_dim")


def summarize(records: list[dict]) -> list[dict]:
    """Aggregate records over seeds: mean and standard deviation of each metric.

    Parameters
    ----------
    records : list of dict
        From :func:`run_nll`.

    Returns
    -------
    list of dict
        One entry per (task, method): ``n_ok``, ``n_failed``, ``errors``,
        ``fit_seconds_mean``, ``n_iter_mean`` and ``<metric>_mean`` / ``<metric>_std``
        (sample standard deviation over successful seeds, 0 for a single seed).

    Examples
    --------
    >>> rows = summarize([{"task": "t", "group": "g", "features": 2, "method": "ml",
    ...                    "status": "ok", "error": None, "loglik": -1.0, "fit_seconds": 1.0}])
    >>> rows[0]["loglik_mean"], rows[0]["loglik_std"]
    (-1.0, 0.0)
    """
    keys = list(dict.fromkeys((r["task"], r["method"]) for r in records))
    summary = []
    for task, method in keys:
        group = [r for r in records if r["task"] == task and r["method"] == method]
        ok = [r for r in group if r["status"] == "ok"]
        entry = {k: group[0][k] for k in ("task", "group", "features", "method")}
        entry.update(
            n_ok=len(ok),
            n_failed=len(group) - len(ok),
            errors=sorted({r["error"] for r in group if r["error"]}),
            fit_seconds_mean=float(np.mean([r["fit_seconds"] for r in group])),
        )
        iters = [r["n_iter"] for r in ok if "n_iter" in r]
        entry["n_iter_mean"] = float(np.mean(iters)) if iters else None
        for metric in _METRICS:
            values = [r[metric] for r in ok if metric in r]
            if values:
                entry[f"{metric}_mean"] = float(np.mean(values))
                entry[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


_GROUP_METRIC = {
    "teacher": ("excess_per_dim", "excess NLL over the true density, nats per dimension", 4),
    "toys": ("excess", "excess NLL over the true density, nats per sample", 3),
    "digits": ("nll", "NLL of the dequantized density, nats per image", 1),
    "bounded": ("excess_per_dim", "sigmoid-squashed teacher, excess NLL, nats per dimension", 4),
}


#: The ``bench nll`` groups of data sets, in the order of the report.
NLL_GROUPS = tuple(_GROUP_METRIC)


def _cell(entry: dict | None, metric: str, digits: int) -> str:
    if entry is None:
        return ""
    if not entry["n_ok"]:
        return f"failed ({entry['errors'][0].split(':')[0] if entry['errors'] else '?'})"
    mean = format_number(entry[f"{metric}_mean"], digits)
    text = f"{mean} ± {format_number(entry[f'{metric}_std'], digits)}"
    return text + (f" ({entry['n_failed']} failed)" if entry["n_failed"] else "")


def nll_markdown(summary: list[dict]) -> str:
    """Render ``bench nll`` summaries as one markdown table per group of data sets.

    Parameters
    ----------
    summary : list of dict
        From :func:`summarize`.

    Returns
    -------
    str
        Markdown text: mean ± standard deviation over seeds; for digits also bits/dim
        and the NLL at cell centres; then epochs and fit time per method.
    """
    lines: list[str] = []
    for group, (metric, title, digits) in _GROUP_METRIC.items():
        rows = [s for s in summary if s["group"] == group]
        if not rows:
            continue
        tasks = list(dict.fromkeys(s["task"] for s in rows))
        methods = list(dict.fromkeys(s["method"] for s in rows))
        find = {(s["task"], s["method"]): s for s in rows}
        extra = []
        if group == "digits":
            many = len(tasks) > 1
            for t in tasks:
                extra += [f"bits/dim, {t}", f"cell centres, {t}"] if many else []
            extra = extra or ["bits/dim", "NLL at cell centres"]
        lines += [f"### {group}: {title} (mean ± std over seeds)", ""]
        lines.append("| method | " + " | ".join(tasks + extra) + " |")
        lines.append("|---" * (1 + len(tasks) + len(extra)) + "|")
        for method in methods:
            cells = [_cell(find.get((t, method)), metric, digits) for t in tasks]
            if group == "digits":
                for t in tasks:
                    entry = find.get((t, method))
                    cells += [_cell(entry, "bits_per_dim", 3), _cell(entry, "nll_centre", 1)]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += ["", "Epochs run (mean) and wall time per fit (s):", ""]
        lines.append("| method | " + " | ".join(tasks) + " |")
        lines.append("|---" * (1 + len(tasks)) + "|")
        for method in methods:
            cells = []
            for t in tasks:
                s = find.get((t, method))
                epochs = (
                    "" if s is None or s["n_iter_mean"] is None else f"{s['n_iter_mean']:.0f} ep, "
                )
                cells.append("" if s is None else f"{epochs}{s['fit_seconds_mean']:.1f} s")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
