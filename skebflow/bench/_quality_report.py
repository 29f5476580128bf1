"""``bench quality``'s report: the summary over seeds and its markdown tables."""

from __future__ import annotations

import math

import numpy as np

from skebflow.bench._quality import GRID_KDE_MAX_TRAIN
from skebflow.bench._tasks import QUALITY_GROUPS, TABLE_IMAGES, format_number

__all__ = ["quality_markdown", "summarize"]

_METRICS = (
    "loglik",
    "true_loglik",
    "excess",
    "excess_per_dim",
    "fit_seconds",
    "n_iter",
    "gap_to_ml",
    "gap_to_ml_per_dim",
    "nll_gap_to_ml_percent",
    "grid_integral",
)


def summarize(records: list[dict]) -> list[dict]:
    """Aggregate records over seeds, per (data set, model).

    Parameters
    ----------
    records : list of dict
        From :func:`run_quality`.

    Returns
    -------
    list of dict
        ``n_ok``, ``n_failed``, ``n_skipped``, ``errors``, ``loglik_by_seed`` and, over
        the successful seeds, ``<metric>_mean``, ``_std`` (sample standard deviation, 0
        for one seed), ``_min`` and ``_max`` of ``loglik``, ``true_loglik``, ``excess``,
        ``excess_per_dim``, ``fit_seconds`` and ``n_iter``, and where the records have
        them of ``gap_to_ml``, ``gap_to_ml_per_dim``, ``nll_gap_to_ml_percent`` (over the
        seeds where the ML row succeeded too) and ``grid_integral``. Also
        ``n_floating_point_error`` (seeds whose fit raised a ``FloatingPointError``);
        for EBFlow rows ``ml_reference``, ``n_diverged`` (seeds whose fit warned with a
        ``DivergenceWarning``) and ``gap_to_ml_by_seed``; for 2-D sets
        ``grid_integral_skipped`` and ``grid_integral_errors`` where they occurred.

    Examples
    --------
    >>> rows = summarize([{"dataset": "iris", "group": "tables", "features": 4,
    ...     "model": "EBFlow", "seed": s, "status": "ok", "error": None,
    ...     "n_train": 112, "n_test": 38, "loglik": v, "fit_seconds": 1.0}
    ...     for s, v in ((0, -1.0), (1, -3.0))])
    >>> rows[0]["loglik_mean"], rows[0]["loglik_min"], rows[0]["n_ok"]
    (-2.0, -3.0, 2)
    """
    keys = list(dict.fromkeys((r["dataset"], r["model"]) for r in records))
    summary = []
    for dataset, model in keys:
        group = [r for r in records if r["dataset"] == dataset and r["model"] == model]
        ok = [r for r in group if r["status"] == "ok"]
        entry = {k: group[0][k] for k in ("dataset", "group", "features", "model")}
        entry.update(n_train=group[0]["n_train"], n_test=group[0]["n_test"])
        entry.update(
            n_ok=len(ok),
            n_failed=sum(r["status"] == "failed" for r in group),
            n_skipped=sum(r["status"] == "skipped" for r in group),
            errors=sorted({r["error"] for r in group if r["error"]}),
            loglik_by_seed={str(r["seed"]): r["loglik"] for r in ok},
            n_floating_point_error=sum(bool(r.get("floating_point_error")) for r in group),
        )
        if "ml_reference" in group[0]:
            entry.update(ml_reference=group[0]["ml_reference"])
            entry["n_diverged"] = sum(bool(r.get("diverged")) for r in group)
            entry["gap_to_ml_by_seed"] = {
                str(r["seed"]): r["gap_to_ml"] for r in ok if "gap_to_ml" in r
            }
        skipped = [r["grid_integral_skipped"] for r in ok if "grid_integral_skipped" in r]
        if skipped:
            entry["grid_integral_skipped"] = skipped[0]
        grid_errors = sorted({r["grid_integral_error"] for r in ok if "grid_integral_error" in r})
        if grid_errors:
            entry["grid_integral_errors"] = grid_errors
        for metric in _METRICS:
            values = [float(r[metric]) for r in ok if metric in r]
            if values:
                entry[f"{metric}_mean"] = float(np.mean(values))
                entry[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                entry[f"{metric}_min"], entry[f"{metric}_max"] = min(values), max(values)
        summary.append(entry)
    return summary


_TITLES = {
    "toys": "2-D toys (exact densities)",
    "tables": "scikit-learn tables, dequantized (digits: nats per image)",
    "teachers": "Gaussian-mixture teachers (exact densities)",
}


def _complete(entry: dict | None, n_seeds: int) -> bool:
    return entry is not None and entry["n_ok"] == n_seeds


def _cell(entry: dict | None, metric: str, digits: int, bold: bool) -> str:
    if entry is None:
        return ""
    if not entry["n_ok"]:
        reason = entry["errors"][0] if entry["errors"] else "?"
        return ("skipped: " if entry["n_skipped"] else "failed: ") + reason.split(":")[0][:40]
    mean, std = entry[f"{metric}_mean"], entry[f"{metric}_std"]
    text = f"{format_number(mean, digits)} ± {format_number(std, digits)}"
    text = f"**{text}**" if bold else text
    lost = entry["n_failed"] + entry["n_skipped"]
    return text + (f" ({lost} failed)" if lost else "")


def _bits_cells(find: dict, dataset: str, models: list[str], n_seeds: int) -> list[str]:
    """Bits per dimension of each model on one data set (from its log-likelihood)."""
    done = [m for m in models if _complete(find.get((dataset, m)), n_seeds)]
    best = max(done, key=lambda m: find[dataset, m]["loglik_mean"], default=None)
    cells = []
    for m in models:
        entry = find.get((dataset, m))
        if entry is None or not entry["n_ok"]:
            cells.append(_cell(entry, "loglik", 3, False))
            continue
        scale = -1.0 / (entry["features"] * math.log(2.0))
        text = f"{format_number(entry['loglik_mean'] * scale, 3)} ± "
        text += format_number(entry["loglik_std"] * abs(scale), 3)
        cells.append(f"**{text}**" if m == best else text)
    return cells


def _margin(find: dict, dataset: str, ranked: list[str]) -> str:
    """Winner minus runner-up, paired over seeds: mean ± std and seeds won."""
    if len(ranked) < 2:
        return "–"
    best, second = (find[dataset, m]["loglik_by_seed"] for m in ranked[:2])
    diffs = np.array([best[s] - second[s] for s in best])
    std = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    won = int(np.sum(diffs > 0))
    return f"{diffs.mean():.3f} ± {std:.3f} vs {ranked[1]} ({won}/{len(diffs)} seeds)"


def _signed(entry: dict, metric: str, digits: int, unit: str = "") -> str:
    """Mean with its sign, ± the standard deviation where more than one seed was paired."""
    mean, std = entry[f"{metric}_mean"], entry[f"{metric}_std"]
    text = f"{mean:+.{digits}f}{unit}"
    return text if len(entry["gap_to_ml_by_seed"]) < 2 else f"{text} ± {std:.{digits}f}{unit}"


def _against_ml_row(entry: dict, model: str, n_seeds: int) -> list[str]:
    """Gap to ML (nats, per dimension, % of NLL) and the seeds that diverged or failed."""
    run = entry["n_ok"] + entry["n_failed"]
    flags = [f"{entry['n_diverged']}/{run}", f"{entry['n_floating_point_error']}/{run}"]
    if entry["ml_reference"] == model:
        return ["ML (the reference)", "", "", *flags]
    if "gap_to_ml_mean" not in entry:
        reason = _cell(entry, "loglik", 3, False) if not entry["n_ok"] else "no ML fit to pair"
        return [f"– ({reason})", "–", "–", *flags]
    paired = len(entry["gap_to_ml_by_seed"])
    gap = _signed(entry, "gap_to_ml", 3)
    gap += f" ({paired} of {n_seeds} seeds)" if paired < n_seeds else ""
    percent = "–"
    if "nll_gap_to_ml_percent_mean" in entry:
        percent = _signed(entry, "nll_gap_to_ml_percent", 1, " %")
    return [gap, _signed(entry, "gap_to_ml_per_dim", 4), percent, *flags]


def _against_ml_lines(
    find: dict, datasets: list[str], models: list[str], n_seeds: int
) -> list[str]:
    """Tabulate the EBFlow rows against their ML row, paired over seeds, and failures."""
    rows = [
        (d, m, find[d, m])
        for d in datasets
        for m in models
        if "ml_reference" in find.get((d, m), {}) and find[d, m]["n_skipped"] < n_seeds
    ]
    compared = any(e["ml_reference"] != m for _, m, e in rows)
    failing = any(e["n_diverged"] or e["n_floating_point_error"] for _, _, e in rows)
    if not rows or not (compared or failing):
        return []
    lines = [
        "Objectives against maximum likelihood (the `EBFlow` row; an image row: its own "
        "architecture's ML row), paired over seeds (mean ± std where more than one): "
        "Δ log-lik = the row's "
        "held-out log-likelihood minus ML's, nats per sample (negative: worse than ML), and "
        "per dimension; NLL vs ML = 100 (NLL − NLL_ML) / |NLL_ML| (positive: worse). "
        "DivergenceWarning and FloatingPointError: seeds whose fit raised one (a "
        "FloatingPointError fails the fit).",
        "",
    ]
    head = ["data set", "row", "Δ log-lik, nats", "Δ log-lik / D", "NLL vs ML"]
    head += ["DivergenceWarning, seeds", "FloatingPointError, seeds"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for d, m, entry in rows:
        lines.append("| " + " | ".join([d, m, *_against_ml_row(entry, m, n_seeds)]) + " |")
    return [*lines, ""]


def _grid_cell(entry: dict | None) -> str:
    if entry is None or not entry["n_ok"]:
        return "–"
    if "grid_integral_mean" not in entry:
        if "grid_integral_errors" in entry:
            return "failed: " + entry["grid_integral_errors"][0].split(":")[0]
        return "skipped" if "grid_integral_skipped" in entry else "–"
    text = f"{entry['grid_integral_mean']:.4f}"
    low, high = entry["grid_integral_min"], entry["grid_integral_max"]
    return text + (f" ({low:.4f}–{high:.4f})" if high > low else "")


def _grid_lines(find: dict, datasets: list[str], models: list[str]) -> list[str]:
    """Tabulate each density's mass on the expanded box of its training data (2-D)."""
    keys = ("grid_integral_mean", "grid_integral_skipped", "grid_integral_errors")
    has = {(d, m) for d in datasets for m in models if any(k in find.get((d, m), {}) for k in keys)}
    grid_sets = [d for d in datasets if any((d, m) in has for m in models)]
    if not grid_sets:
        return []
    lines = [
        "Mass of the fitted density on the box 1.5 × the training data's range per axis "
        "(midpoint sum of exp(score_samples) on 300 × 300 cells; mean, min–max over seeds): "
        "about 1 for a density that keeps its mass near the data, less where mass leaked "
        f"away (KernelDensity: skipped above {GRID_KDE_MAX_TRAIN} training points).",
        "",
    ]
    lines += ["| data set | " + " | ".join(models) + " |", "|---" * (1 + len(models)) + "|"]
    for d in grid_sets:
        lines.append(f"| {d} | " + " | ".join(_grid_cell(find.get((d, m))) for m in models) + " |")
    return [*lines, ""]


def quality_markdown(summary: list[dict], n_seeds: int) -> str:
    """Render ``bench quality`` summaries as markdown tables, one set per group.

    Parameters
    ----------
    summary : list of dict
        From :func:`summarize`.
    n_seeds : int
        Seeds run; only a model that succeeded on all of them can be a row's winner.

    Returns
    -------
    str
        Per group: held-out log-likelihood (nats per sample, mean ± std over seeds,
        winner in bold, the winner's paired margin over the runner-up), the excess NLL
        per dimension for the teachers, the EBFlow rows against their ML row with the
        seeds that diverged (when a row is compared or one diverged), the mass of each
        density on the expanded box of its training data (2-D sets), and the fit times.

    Examples
    --------
    >>> print(quality_markdown([], 3))
    <BLANKLINE>
    """
    lines: list[str] = []
    for group in QUALITY_GROUPS:
        rows = [s for s in summary if s["group"] == group]
        if not rows:
            continue
        datasets = list(dict.fromkeys(s["dataset"] for s in rows))
        models = list(dict.fromkeys(s["model"] for s in rows))
        find = {(s["dataset"], s["model"]): s for s in rows}
        truth = group != "tables"
        lines += [f"### {_TITLES[group]}: held-out log-likelihood, nats per sample", ""]
        lines += [f"Mean ± std over {n_seeds} seed(s); bold: the highest mean.", ""]
        head = ["data set", "D", "train / test", *(["truth"] if truth else []), *models]
        lines += ["| " + " | ".join([*head, "winner − runner-up"]) + " |"]
        lines += ["|---" * (len(head) + 1) + "|"]
        for d in datasets:
            ranked = sorted(
                (m for m in models if _complete(find.get((d, m)), n_seeds)),
                key=lambda m, d=d: -find[d, m]["loglik_mean"],
            )
            first = find[d, models[0]]
            cells = [d, str(first["features"]), f"{first['n_train']} / {first['n_test']}"]
            if truth:
                entry = next((find[d, m] for m in models if "true_loglik_mean" in find[d, m]), None)
                cells.append("" if entry is None else format_number(entry["true_loglik_mean"], 3))
            cells += [_cell(find.get((d, m)), "loglik", 3, ranked[:1] == [m]) for m in models]
            lines.append("| " + " | ".join([*cells, _margin(find, d, ranked)]) + " |")
        lines.append("")
        images = [d for d in datasets if d in TABLE_IMAGES]
        if images:
            lines += ["Image tables in bits per dimension (NLL / (D ln 2); bold: the lowest):", ""]
            lines += ["| data set | " + " | ".join(models) + " |", "|---" * (1 + len(models)) + "|"]
            for d in images:
                lines.append(f"| {d} | " + " | ".join(_bits_cells(find, d, models, n_seeds)) + " |")
            lines.append("")
        if group == "teachers":
            lines += ["Excess NLL over the truth, nats per dimension (bold: the lowest):", ""]
            lines += ["| data set | " + " | ".join(models) + " |", "|---" * (1 + len(models)) + "|"]
            for d in datasets:
                done = [m for m in models if _complete(find.get((d, m)), n_seeds)]
                best = min(done, key=lambda m, d=d: find[d, m]["excess_per_dim_mean"], default=None)
                cells = [_cell(find.get((d, m)), "excess_per_dim", 4, m == best) for m in models]
                lines.append(f"| {d} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += _against_ml_lines(find, datasets, models, n_seeds)
        lines += _grid_lines(find, datasets, models)
        lines += ["Fit time per fit, s (mean, min–max over seeds; epochs where they apply):", ""]
        lines += ["| data set | " + " | ".join(models) + " |", "|---" * (1 + len(models)) + "|"]
        for d in datasets:
            cells = []
            for m in models:
                s = find.get((d, m))
                if s is None or "fit_seconds_mean" not in s:
                    cells.append("")
                    continue
                text = f"{s['fit_seconds_mean']:.1f} ({s['fit_seconds_min']:.1f}–"
                text += f"{s['fit_seconds_max']:.1f})"
                if "n_iter_mean" in s:
                    text += f", {s['n_iter_mean']:.0f} ep"
                cells.append(text)
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
