"""``bench speed``'s report: markdown tables and the plot of its records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from skebflow.bench._tasks import format_number

__all__ = ["plot_speed", "speed_markdown"]


def speed_markdown(records: list[dict]) -> str:
    """Render ``bench speed`` records as one markdown table per dimension.

    Parameters
    ----------
    records : list of dict
        From :func:`run_speed`.

    Returns
    -------
    str
        Markdown text.

    Examples
    --------
    >>> print(speed_markdown([{"features": 4, "objective": "ml", "median_ms": 2.0,
    ...     "q25_ms": 1.5, "q75_ms": 2.5, "speedup_vs_ml": 1.0, "ratio_to_floor": 2.0,
    ...     "fit_ms": 2.5, "fit_speedup_vs_ml": 1.0, "error": None}]).splitlines()[-1])
    | ml | 2.00 | 1.50–2.50 | 1.00× | 2.00 | 2.50 | 1.00× |
    """
    lines: list[str] = []
    for d, shape in dict.fromkeys((r["features"], r.get("image_shape")) for r in records):
        title = f"D = {d}" if shape is None else f"CNN, {'×'.join(map(str, shape))} (D = {d})"
        lines += [
            f"### {title}",
            "",
            "| objective | ms/step (median) | IQR (ms) | speed-up vs ML | ÷ floor "
            "| with validation (ms) | speed-up vs ML, with validation |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in records if (r["features"], r.get("image_shape")) == (d, shape)):
            if r["error"]:
                lines.append(f"| {r['objective']} | failed: {r['error'][:60]} | | | | | |")
                continue
            iqr = f"{format_number(r['q25_ms'])}–{format_number(r['q75_ms'])}"
            lines.append(
                f"| {r['objective']} | {format_number(r['median_ms'])} | {iqr} | "
                f"{format_number(r['speedup_vs_ml'])}× | {format_number(r['ratio_to_floor'])} | "
                f"{format_number(r.get('fit_ms'))} | {format_number(r.get('fit_speedup_vs_ml'))}× |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_speed(records: list[dict], path: Path, log: Callable[[str], None] = print) -> None:
    """Plot times per step and ratios to the floor into ``path`` (needs matplotlib).

    Parameters
    ----------
    records : list of dict
        From :func:`run_speed`.
    path : Path
        The image file to write.
    log : callable, default=print
        Told when matplotlib is missing (the plot is then skipped).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: skipping the plot (pip install matplotlib).")
        return
    records = [r for r in records if r.get("image_shape") is None]  # the FC rows
    if not records:
        log("no FC dimension was timed: skipping the plot.")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    objectives = list(dict.fromkeys(r["objective"] for r in records))
    dims = list(dict.fromkeys(r["features"] for r in records))
    width = 0.8 / max(len(objectives), 1)
    for k, name in enumerate(objectives):
        ok = [r for r in records if r["objective"] == name and r["median_ms"] is not None]
        label = name if ok else f"{name} (failed)"
        left.plot([r["features"] for r in ok], [r["median_ms"] for r in ok], "o-", label=label)
        ratios = {r["features"]: r["ratio_to_floor"] for r in ok}
        xs = [i + (k - (len(objectives) - 1) / 2) * width for i in range(len(dims))]
        right.bar(xs, [ratios.get(d) or 0.0 for d in dims], width, label=name)
    left.set(xscale="log", yscale="log", xlabel="D", ylabel="ms per training step")
    left.set_xticks(dims, [str(d) for d in dims])
    left.minorticks_off()
    left.set_title("Time per step (FC flow, batch 100; median)")
    left.legend()
    right.set_xticks(range(len(dims)), [f"D={d}" for d in dims])
    right.set(ylabel="time ÷ floor")
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set_title("Ratio to the floor (mean-energy step)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
