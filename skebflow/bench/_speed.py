"""``bench speed``: time per training step of every objective against ML and the floor.

Every objective gets its own FC flow (built by the estimator's builder) and its own
:class:`~skebflow.training.Trainer` with the estimator's defaults (Adam, EMA, clipping, and
for ``+sv`` the singular-value barrier), and runs exactly what a fit runs per step:
minibatch gather, :meth:`~skebflow.training.Trainer.step` (loss, regularizers, backward,
gradient-norm check, clipping, Adam step, EMA update).
Objectives are interleaved round by round, in a
rotating order, after untimed warm-up steps, so that slow drifts of the machine (other
processes, clock changes) hit them all alike; the median over all timed steps is reported.
The **floor** is the same step with the loss ``mean_energy``: no score, no determinant.
Names ending in ``+sv`` add the singular-value barrier that the estimator gives the
score-matching objectives by default (``min_singular_value="auto"``). In a default fit
its search for small singular values runs after each epoch's validation and reuses the
factorization of the validated (EMA) weights that the validation's log-normalizer made,
so it costs triangular solves only; it is timed that way, separately, and its share per
step (one search per epoch of :data:`~skebflow.estimators.AUTO_BATCH_STEPS`
steps) is added to those rows (``search_ms``), so every row is what a default fit pays
per step in :meth:`~skebflow.training.Trainer.step`. The validation itself (the EMA
weights' log-normalizer and log-likelihood of the held-out rows, once per epoch, for
every objective alike) is timed too and reported apart (``validation_ms`` per step,
and ``fit_ms``, the step with it).

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267 (Table 2 and Fig. 2a).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from skebflow.estimators import (
    AUTO_BATCH_STEPS,
    AUTO_EMA_MAX_DECAY,
    AUTO_MIN_SINGULAR_VALUE,
    DEFAULT_LEARNING_RATES,
    EBFlowDensity,
)
from skebflow.nn import ARCHITECTURES
from skebflow.objectives import (
    OBJECTIVE_OPTIONS,
    SingularValueBarrier,
    bind_objective,
    make_regularizers,
)
from skebflow.training import TrainConfig, Trainer

__all__ = ["IMAGE_SPEED_OBJECTIVES", "SPEED_OBJECTIVES", "run_speed"]

#: What ``bench speed`` times, in this order; ``"floor"`` is :func:`mean_energy`,
#: ``+sv`` adds the estimator's default singular-value barrier.
SPEED_OBJECTIVES: tuple[str, ...] = (
    "floor",
    "ml",
    "sml",
    "ssm",
    "ssm+sv",
    "dsm",
    "dsm+sv",
    "fdssm",
    "fdssm+sv",
)
#: What ``bench speed --images`` times on the paper's CNN (no barrier: it has no dense
#: layer).
IMAGE_SPEED_OBJECTIVES: tuple[str, ...] = ("floor", "ml", "ssm", "dsm", "fdssm")
#: The paper's CNN: 3 blocks of 2 convolutions 7×7 (``n_blocks=3``).
PAPER_CNN = {"convs_per_block": 2, "kernel_size": 7}
PAPER_CNN_BLOCKS = 3
#: Suffix of an objective timed with the singular-value barrier.
BARRIER_SUFFIX = "+sv"
#: Validation rows of a default fit whose epochs have ``AUTO_BATCH_STEPS`` steps of 100
#: rows (``validation_fraction=0.1`` of 2,222 rows).
VALIDATION_ROWS = 222


@dataclass
class _Runner:
    """One objective's trainer (model, optimizer, EMA, barrier) and data, and the timings."""

    name: str
    trainer: Trainer
    data: Tensor
    batch_size: int
    times: list[float] = field(default_factory=list)
    search_seconds: float = 0.0
    validation_seconds: float = 0.0
    n_skipped: int = 0
    cursor: int = 0
    order: Tensor | None = None
    error: str | None = None

    def step(self) -> None:
        """Gather a minibatch and run :meth:`skebflow.training.Trainer.step` on it."""
        n = self.data.shape[0]
        if self.cursor + self.batch_size > n:
            self.cursor = 0
        generator = self.trainer.generator
        if self.cursor == 0 or self.order is None:
            self.order = torch.randperm(n, generator=generator, device=self.data.device)
        batch = self.data[self.order[self.cursor : self.cursor + self.batch_size]]
        self.cursor += self.batch_size
        loss = self.trainer.step(batch)
        if loss is None:
            self.n_skipped += 1
        else:
            loss.cpu()  # the trainer reads every loss back, so the benchmark does too

    def time_validation(self, device: torch.device, repeats: int = 3) -> None:
        """Time one epoch's validation of the kept (EMA) weights; store its share per step.

        A validation computes the log-normalizer of freshly averaged weights (one LU
        factorization per dense layer) and the log-likelihood of the validation rows
        (:data:`VALIDATION_ROWS`); an epoch has ``AUTO_BATCH_STEPS`` steps.
        """
        kept = self.trainer.kept
        rows = self.data[:VALIDATION_ROWS]
        times = []
        for _ in range(repeats):
            with torch.no_grad():
                for parameter in kept.parameters():
                    parameter.mul_(1.0)  # a new version, as after EMA updates
                _synchronize(device)
                start = time.perf_counter()
                float(kept.log_prob(rows).mean())
                _synchronize(device)
            times.append(time.perf_counter() - start)
        self.validation_seconds = float(np.median(times)) / AUTO_BATCH_STEPS

    def time_searches(self, device: torch.device, repeats: int = 3) -> None:
        """Time the barriers' search after a validation and store its cost per step.

        The timed steps show the barrier's per-step tracking cost. Its search runs once
        per epoch after the validation
        (:meth:`~skebflow.objectives._regularizers.SingularValueBarrier.after_validation`),
        on the validated weights whose factorization the validation cached; its share of
        a step, the search's time over ``AUTO_BATCH_STEPS``, is measured here (after
        :meth:`time_validation`, which leaves the factorization cached).
        """
        barriers = [r for r in self.trainer.regularizers if isinstance(r, SingularValueBarrier)]
        kept = self.trainer.kept
        total = 0.0
        for barrier in barriers:
            times = []
            for _ in range(repeats):
                with torch.no_grad():
                    kept.log_normalizer()  # what the validation leaves cached (not timed)
                _synchronize(device)
                start = time.perf_counter()
                barrier.after_validation(kept)
                _synchronize(device)
                times.append(time.perf_counter() - start)
            total += float(np.median(times)) / AUTO_BATCH_STEPS
        self.search_seconds = total


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_runner(
    name: str,
    features: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    n_blocks: int,
    seed: int,
    image_shape: tuple[int, int, int] | None = None,
) -> _Runner:
    defaults = EBFlowDensity().get_params()
    barrier = name.endswith(BARRIER_SUFFIX)
    objective = name.removesuffix(BARRIER_SUFFIX)
    cpu_generator = torch.Generator().manual_seed(seed)
    architecture = "fc" if image_shape is None else "conv"
    options = {} if image_shape is None else {"image_shape": image_shape, **PAPER_CNN}
    flow = ARCHITECTURES[architecture](
        features, n_blocks=n_blocks, generator=cpu_generator, **options
    )
    flow = flow.to(device=device, dtype=dtype).train()
    data = torch.randn(8 * batch_size, features, generator=cpu_generator, dtype=torch.float64)
    ema_decay = defaults["ema_decay"]
    if ema_decay == "auto":  # the decay's value does not change the cost of an update
        ema_decay = AUTO_EMA_MAX_DECAY
    learning_rate = defaults["learning_rate"]
    if learning_rate == "auto":
        learning_rate = DEFAULT_LEARNING_RATES[architecture]
    config = TrainConfig(
        learning_rate=learning_rate,
        batch_size=batch_size,
        ema_decay=ema_decay,
        max_grad_norm=defaults["max_grad_norm"],
    )
    loss = bind_objective(objective, **{key: defaults[key] for key in OBJECTIVE_OPTIONS})
    regularizers = make_regularizers(objective, AUTO_MIN_SINGULAR_VALUE if barrier else None)
    trainer = Trainer(
        flow,
        loss,
        config,
        generator=torch.Generator(device=device).manual_seed(seed + 1),
        regularizers=regularizers,
    )
    return _Runner(
        name=name, trainer=trainer, data=data.to(device=device, dtype=dtype), batch_size=batch_size
    )


def _timed_steps(runner: _Runner, n_steps: int, device: torch.device, record: bool) -> None:
    for _ in range(n_steps):
        if runner.error is not None:
            return
        _synchronize(device)
        start = time.perf_counter()
        try:
            runner.step()
        except (FloatingPointError, RuntimeError, ValueError) as exc:
            runner.error = f"{type(exc).__name__}: {exc}"
            return
        _synchronize(device)
        if record:
            runner.times.append(time.perf_counter() - start)


def run_speed(
    features: list[int],
    *,
    objectives: tuple[str, ...] = SPEED_OBJECTIVES,
    repeats: int = 10,
    steps_per_round: int = 3,
    warmup: int = 3,
    batch_size: int = 100,
    n_blocks: int = 2,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    log: Callable[[str], None] = print,
    image_shapes: tuple[tuple[int, int, int], ...] = (),
    image_objectives: tuple[str, ...] = IMAGE_SPEED_OBJECTIVES,
) -> list[dict]:
    """Time one training step of each objective on the FC flow at each dimension.

    With ``image_shapes``, the same on the paper's CNN (:data:`PAPER_CNN`,
    :data:`PAPER_CNN_BLOCKS` blocks) at each image shape, after the FC dimensions; those
    records have ``architecture="conv"`` and ``image_shape``.

    Parameters
    ----------
    features : list of int
        The dimensions :math:`D` to measure.
    objectives : tuple of str, default=SPEED_OBJECTIVES
        Names among ``"floor"`` and :data:`skebflow.objectives._registry.OBJECTIVES`,
        optionally with the suffix ``"+sv"`` (the default barrier); ``"floor"`` and
        ``"ml"`` are needed for the ratios.
    repeats : int, default=10
        Interleaved rounds; in each, every objective runs ``steps_per_round`` timed steps.
    steps_per_round : int, default=3
        Consecutive timed steps per objective and round.
    warmup : int, default=3
        Untimed steps per objective before the first round.
    batch_size : int, default=100
        Minibatch size (the paper's).
    n_blocks : int, default=2
        Dense layers of the FC flow (2 is the paper's MNIST-FC model).
    device : torch.device or None, default=None
        Where to run; the CPU when ``None``.
    dtype : torch.dtype, default=torch.float32
        Training precision.
    seed : int, default=0
        Seed of the initialization, data and objective noise.
    log : callable, default=print
        Receives one progress line per dimension.
    image_shapes : tuple of (int, int, int), default=()
        Images ``(C, H, W)`` for the CNN rows.
    image_objectives : tuple of str, default=IMAGE_SPEED_OBJECTIVES
        What is timed on the CNN.

    Returns
    -------
    list of dict
        One record per (dimension, objective): ``features``, ``objective``, ``median_ms``
        (the median timed step plus ``search_ms``, the barrier's search per step),
        ``q25_ms``, ``q75_ms`` (of the timed steps), ``n_timed``, ``n_skipped``, ``error``
        (``None`` on success), ``ratio_to_ml`` and ``speedup_vs_ml`` (time of ML / time),
        ``ratio_to_floor`` (``None`` where the reference failed), ``validation_ms`` (the
        per-epoch validation's share of a step), ``fit_ms`` (``median_ms`` plus it) and
        ``fit_speedup_vs_ml``.

    Examples
    --------
    >>> records = run_speed([8], repeats=1, steps_per_round=1, warmup=1, log=lambda s: None)
    >>> sorted({r["objective"] for r in records}) == sorted(SPEED_OBJECTIVES)
    True
    """
    device = torch.device("cpu") if device is None else device
    records: list[dict] = []
    cases = [(d, None, n_blocks, objectives) for d in features]
    cases += [
        (math.prod(shape), tuple(shape), PAPER_CNN_BLOCKS, image_objectives)
        for shape in image_shapes
    ]
    for d, image_shape, blocks, names in cases:
        start = time.perf_counter()
        runners = [
            _make_runner(
                name,
                d,
                device=device,
                dtype=dtype,
                batch_size=batch_size,
                n_blocks=blocks,
                seed=seed,
                image_shape=image_shape,
            )
            for name in names
        ]
        for runner in runners:
            _timed_steps(runner, warmup, device, record=False)
        for round_index in range(repeats):
            shift = round_index % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                _timed_steps(runner, steps_per_round, device, record=True)
        for runner in runners:
            if runner.error is None:
                runner.time_validation(device)
                runner.time_searches(device)
        # What a fit pays per step: the median timed step plus the barrier's search share.
        medians = {
            r.name: float(np.median(r.times)) + r.search_seconds
            if r.times and r.error is None
            else None
            for r in runners
        }
        fits = {
            name: None if value is None else value + runner.validation_seconds
            for (name, value), runner in zip(medians.items(), runners, strict=True)
        }
        for runner in runners:
            record = _record(d, runner, medians, fits)
            record["architecture"] = "fc" if image_shape is None else "conv"
            record["image_shape"] = image_shape
            records.append(record)
        where = f"D={d}" if image_shape is None else "conv " + "x".join(map(str, image_shape))
        log(
            f"{where}: "
            + ", ".join(
                f"{name} {1e3 * value:.1f} ms" if value is not None else f"{name} failed"
                for name, value in medians.items()
            )
            + f" ({time.perf_counter() - start:.0f} s)"
        )
        del runners
    return records


def _record(
    d: int, runner: _Runner, medians: dict[str, float | None], fits: dict[str, float | None]
) -> dict:
    times = np.asarray(runner.times)
    median, fit = medians[runner.name], fits[runner.name]
    ml, floor = medians.get("ml"), medians.get("floor")

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a / b

    return {
        "features": d,
        "objective": runner.name,
        "median_ms": None if median is None else 1e3 * median,
        "search_ms": 1e3 * runner.search_seconds,
        "validation_ms": 1e3 * runner.validation_seconds,
        "fit_ms": None if fit is None else 1e3 * fit,
        "fit_speedup_vs_ml": ratio(fits.get("ml"), fit),
        "q25_ms": 1e3 * float(np.quantile(times, 0.25)) if times.size else None,
        "q75_ms": 1e3 * float(np.quantile(times, 0.75)) if times.size else None,
        "n_timed": int(times.size),
        "n_skipped": runner.n_skipped,
        "error": runner.error,
        "ratio_to_ml": ratio(median, ml),
        "speedup_vs_ml": ratio(ml, median),
        "ratio_to_floor": ratio(median, floor),
    }
