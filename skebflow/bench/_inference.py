"""``bench inference``: rows per second and peak memory of a fitted model's answers.

**Throughput.** At each dimension, an :class:`~skebflow.EBFlowDensity` with its default
architecture, a full-covariance :class:`~sklearn.mixture.GaussianMixture` and a
:class:`~sklearn.neighbors.KernelDensity` (Scott's bandwidth) are fitted on the same
``n_train`` rows of a correlated Gaussian; then ``score_samples`` on the same ``n_rows``
held-out rows and ``sample(n_rows)`` are timed for each, interleaved round by round in a
rotating order, and the median over the rounds is reported as rows per second, with
EBFlow's ``score_gradient`` (which the peers do not offer). The flow is trained for a
few epochs only: inference costs do not depend on the weights, only on the architecture.
KernelDensity's cost grows with its training set (it keeps every row), so its figures
hold for ``n_train`` rows.

**Memory.** Each method runs alone in a fresh process on ``memory_rows`` × ``memory_features``
rows, which the process makes before it measures: the peak resident set during the call
(the kernel's ``VmHWM``, reset just before the call through ``/proc/self/clear_refs``;
``getrusage`` where that is not available) above the resident set just before it, and
the peak of numpy's allocations (``tracemalloc``, which sees numpy but not torch),
against the size of the input and of the result. Bounded memory means the extra stays
near the result's size whatever the number of rows.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import resource
import time
import tracemalloc
import warnings
from collections.abc import Callable
from queue import Empty

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity

from skebflow.bench._tasks import format_number
from skebflow.estimators import EBFlowDensity
from skebflow.exceptions import DivergenceWarning

__all__ = [
    "INFERENCE_FEATURES",
    "MEMORY_METHODS",
    "inference_markdown",
    "measure_memory",
    "run_inference",
]

#: Dimensions of ``bench inference``'s throughput table.
INFERENCE_FEATURES: tuple[int, ...] = (2, 64, 784)
#: (model, method) pairs of the memory table.
MEMORY_METHODS: tuple[tuple[str, str], ...] = (
    ("EBFlow", "score_samples"),
    ("EBFlow", "score_gradient"),
    ("EBFlow", "sample"),
    ("GMM", "score_samples"),
    ("GMM", "sample"),
)
#: Epochs of the benchmark's flows (the weights do not change inference costs).
FIT_EPOCHS = 2
#: Components of the GaussianMixture peer.
GMM_COMPONENTS = 10
_MB = 2.0**20


def _data(n: int, features: int, seed: int) -> np.ndarray:
    """Correlated Gaussian rows, made in blocks (no temporary as large as the result)."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(features) + 0.3 * rng.normal(size=(features, features)) / np.sqrt(features)
    out = np.empty((n, features))
    for start in range(0, n, 65_536):
        block = out[start : start + 65_536]
        block[:] = rng.normal(size=block.shape) @ mixing
    return out


def _models(
    features: int, n_train: int, seed: int, names: tuple[str, ...] = ("EBFlow", "GMM", "KDE")
) -> dict[str, object]:
    X = _data(n_train, features, seed)
    makers: dict[str, Callable[[], object]] = {
        "EBFlow": lambda: EBFlowDensity(max_iter=FIT_EPOCHS, random_state=seed),
        "GMM": lambda: GaussianMixture(GMM_COMPONENTS, random_state=seed),
        "KDE": lambda: KernelDensity(bandwidth="scott"),
    }
    with warnings.catch_warnings():
        # A few epochs, on purpose: weights do not change the cost of inference, and a
        # two-epoch flow may still be worse than the untrained one.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", DivergenceWarning)
        return {name: makers[name]().fit(X) for name in names}


def _call(model: object, method: str, X: np.ndarray, seed: int) -> np.ndarray:
    if method == "sample":
        if isinstance(model, GaussianMixture):  # seeded by its random_state; (X, labels)
            return model.sample(X.shape[0])[0]
        return model.sample(X.shape[0], random_state=seed)
    return getattr(model, method)(X)


def run_inference(
    features: tuple[int, ...] = INFERENCE_FEATURES,
    *,
    n_rows: int = 10_000,
    n_train: int = 2_000,
    repeats: int = 5,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Time ``score_samples``, ``score_gradient`` and ``sample`` of EBFlow, GMM and KDE.

    Parameters
    ----------
    features : tuple of int, default=INFERENCE_FEATURES
        Dimensions.
    n_rows : int, default=10_000
        Rows scored and sampled per call.
    n_train : int, default=2_000
        Training rows of every model.
    repeats : int, default=5
        Interleaved rounds; the median is reported.
    seed : int, default=0
        Seeds the data and the models.
    log : callable, default=print
        Progress messages.

    Returns
    -------
    list of dict
        One record per (dimension, model, method): ``rows_per_s`` (median),
        ``median_s``, ``ratio_to_ebflow`` (the model's rows per second over EBFlow's).

    Examples
    --------
    >>> records = run_inference((2,), n_rows=50, n_train=100, repeats=1, log=lambda _: None)
    >>> sorted({r["model"] for r in records})
    ['EBFlow', 'GMM', 'KDE']
    """
    records: list[dict] = []
    for d in features:
        models = _models(d, n_train, seed)
        X = _data(n_rows, d, seed + 1)
        jobs = [(name, method) for name in models for method in ("score_samples", "sample")]
        jobs.insert(1, ("EBFlow", "score_gradient"))
        times: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
        for k in range(repeats):
            for name, method in jobs[k % len(jobs) :] + jobs[: k % len(jobs)]:
                start = time.perf_counter()
                _call(models[name], method, X, seed + k)
                times[name, method].append(time.perf_counter() - start)
        for name, method in jobs:
            median = float(np.median(times[name, method]))
            records.append(
                {"features": d, "model": name, "method": method, "n_rows": n_rows}
                | {"n_train": n_train, "median_s": median, "rows_per_s": n_rows / median}
            )
        for r in records[-len(jobs) :]:
            own = next(
                q["rows_per_s"]
                for q in records[-len(jobs) :]
                if q["model"] == "EBFlow" and q["method"] == r["method"]
            )
            r["ratio_to_ebflow"] = r["rows_per_s"] / own
        log(f"inference D={d}: " + ", ".join(f"{n} {m} {times[n, m][-1]:.3f}s" for n, m in jobs))
    return records


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the kernel's peak resident set of this process (Linux ≥ 4.0); ``False`` if not."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _peak_bytes() -> int:
    """Return the peak resident set since :func:`_reset_peak` (else since the start)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory_child(
    model_name: str, method: str, n_rows: int, features: int, seed: int, queue: object
) -> None:
    try:
        _measure_in_child(model_name, method, n_rows, features, seed, queue)
    except BaseException as error:  # the parent waits for a record: send the failure
        queue.put({"error": f"{type(error).__name__}: {error}"})
        raise


def _measure_in_child(
    model_name: str, method: str, n_rows: int, features: int, seed: int, queue: object
) -> None:
    torch.set_num_threads(1)
    model = _models(features, 2_000, seed, (model_name,))[model_name]
    X = _data(n_rows, features, seed + 1) if method != "sample" else np.empty((n_rows, features))
    gc.collect()
    before = _resident_bytes()
    # Without a reset, the peak so far (the fit, the data) may hide the call's own.
    reset = _reset_peak()
    floor = before if reset else max(before, _peak_bytes())
    tracemalloc.start()
    out = _call(model, method, X, seed)
    numpy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = _peak_bytes()
    queue.put(
        {
            "model": model_name,
            "method": method,
            "n_rows": n_rows,
            "features": features,
            "input_mb": 0.0 if method == "sample" else X.nbytes / _MB,
            "output_mb": out.nbytes / _MB,
            "extra_peak_mb": max(0, peak - floor) / _MB,
            "peak_was_reset": reset,
            "rss_before_mb": before / _MB,
            "peak_rss_mb": peak / _MB,
            "numpy_peak_mb": numpy_peak / _MB,
        }
    )


def measure_memory(
    methods: tuple[tuple[str, str], ...] = MEMORY_METHODS,
    *,
    n_rows: int = 1_000_000,
    features: int = 64,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Measure the peak memory of each (model, method) in a fresh process.

    Parameters
    ----------
    methods : tuple of (str, str), default=MEMORY_METHODS
        ``(model, method)`` pairs; models ``"EBFlow"``, ``"GMM"``, ``"KDE"``.
    n_rows, features : int, default=1_000_000, 64
        Size of the rows scored or sampled.
    seed : int, default=0
        Seeds the data and the models.
    log : callable, default=print
        Progress messages.

    Returns
    -------
    list of dict
        Per pair: ``input_mb``, ``output_mb``, ``extra_peak_mb`` (the peak resident set
        above what the process held before the call), ``numpy_peak_mb``
        (``tracemalloc``'s peak during the call), ``peak_rss_mb``.
    """
    context = multiprocessing.get_context("spawn")
    records = []
    for model_name, method in methods:
        queue = context.Queue()
        child = context.Process(
            target=_memory_child, args=(model_name, method, n_rows, features, seed, queue)
        )
        child.start()
        record = _child_record(child, queue, f"{model_name}.{method}")
        child.join()
        records.append(record)
        log(
            f"memory {model_name}.{method}: +{record['extra_peak_mb']:.0f} MB peak "
            f"(result {record['output_mb']:.0f} MB)"
        )
    return records


def _child_record(child: object, queue: object, what: str) -> dict:
    """Wait for the child's record; raise if it failed or died without one (no hang)."""
    while True:
        try:
            record = queue.get(timeout=1.0)
            break
        except Empty:
            if child.is_alive():
                continue
        try:  # it may have put its record just before it ended
            record = queue.get(timeout=1.0)
            break
        except Empty:
            raise RuntimeError(
                f"the memory measurement of {what} ended (exit status {child.exitcode}) "
                "without a result"
            ) from None
    if "error" in record:
        child.join()
        raise RuntimeError(f"the memory measurement of {what} failed: {record['error']}")
    return record


def inference_markdown(throughput: list[dict], memory: list[dict]) -> str:
    """Render the throughput and memory records as markdown tables.

    Parameters
    ----------
    throughput : list of dict
        From :func:`run_inference`.
    memory : list of dict
        From :func:`measure_memory` (may be empty).

    Returns
    -------
    str
        Markdown text.

    Examples
    --------
    >>> print(inference_markdown([{"features": 2, "model": "GMM", "method": "sample",
    ...     "rows_per_s": 2e6, "ratio_to_ebflow": 4.0}], []).splitlines()[-1])
    | 2 | GMM | sample | 2,000,000 | 4.00 |
    """
    lines = [
        "| D | model | method | rows/s (median) | ÷ EBFlow |",
        "|---|---|---|---|---|",
    ]
    for r in throughput:
        lines.append(
            f"| {r['features']} | {r['model']} | {r['method']} | {r['rows_per_s']:,.0f} | "
            f"{format_number(r['ratio_to_ebflow'])} |"
        )
    if memory:
        lines += [
            "",
            "| model | method | rows × D | input (MB) | result (MB) | extra peak RSS (MB) "
            "| numpy peak (MB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in memory:
            lines.append(
                f"| {r['model']} | {r['method']} | {r['n_rows']:,} × {r['features']} | "
                f"{r['input_mb']:.0f} | {r['output_mb']:.0f} | {r['extra_peak_mb']:.0f} | "
                f"{r['numpy_peak_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"
