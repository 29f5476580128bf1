"""``bench anytime``: held-out NLL against training wall-clock time, for each objective.

What a user choosing an objective needs: how long each objective takes to reach a given
held-out likelihood on the same flow and the same data. For every task (a flow builder and
its train/test data) and every objective, a fresh copy of the same initial flow is trained
by :class:`~skebflow.training.Trainer` with one recipe for all (Adam, learning rate
:data:`LEARNING_RATE`, batch :data:`BATCH_SIZE`, EMA :data:`EMA_DECAY`, gradient-norm
clipping at ``TrainConfig``'s default; each objective's own options from
:func:`~skebflow.objectives.bind_objective`; for the score-matching objectives the
estimator's default singular-value barrier, :data:`~skebflow.estimators.AUTO_MIN_SINGULAR_VALUE`,
and, where the estimator's ``whiten="auto"`` would (the FC flow), a fixed
:class:`~skebflow.nn.Whitening` in front of the flow, fitted to one dequantized pass of the
training images, its fit counted on the objective's clock), within a wall-clock budget per
objective.

**The clock.** A training clock per objective runs across everything a training step does
(minibatch gather, dequantization noise and the logit map, loss, regularizers, backward,
clipping, Adam, EMA, the barrier's own searches, and on CUDA the wait for the device) and
stops at checkpoints: the checkpoint evaluations are the measurement, not the method, and
are left out. Checkpoints are geometric in training time (:func:`checkpoint_times`), from
``first_fraction`` of the budget to the budget. Objectives are interleaved segment by
segment (each trains up to the next checkpoint time, in a rotating order), so that slow
drifts of a shared machine hit them alike.

**The measurement.** At each checkpoint, the exact held-out NLL of the kept (EMA) flow, in
float64, on a fixed test set: nats per image of the dequantized density
``-mean log p(x + u)``, with one fixed draw ``u ~ U[0, 1)^D`` per test image (the same for
every objective and checkpoint), and bits per dimension. Once per task, the time of one
exact :meth:`~skebflow.nn.EnergyFlow.log_normalizer` of the flow (training precision, on the
device, frozen weights: what an estimator's per-epoch validation pays) is reported next to
the curves.

**The data** (nothing is downloaded): scikit-learn's 8×8 digits (integers in [0, 16],
1,437 training and 360 test images), resized by bilinear interpolation to the task's
image size and rounded back to integers in [0, 16] (:func:`resize_digits`); three-channel
tasks repeat the grey image in every channel. The flow sees the paper's chain
(dequantization, logit of the box (0, 17)), as ``bench nll`` does on digits, and the
objective is computed after it (Match after Preprocessing).

**The report.** Per task and objective, the first checkpoint at which the held-out NLL is
within :data:`TARGET_FRACTION` of ML's final NLL (:func:`time_to_target`), the time from
which it stays there, the final and best NLL, steps per second, the ratio of times to
ML's, and the other way round, when ML's curve first gets to that objective's final NLL.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from skebflow.bench._speed import PAPER_CNN
from skebflow.bench._tasks import _rng, format_number
from skebflow.datasets import load_digits_integer
from skebflow.estimators import AUTO_MIN_SINGULAR_VALUE, auto_whiten, whitening_covariance
from skebflow.nn import ARCHITECTURES, EnergyFlow, Whitening
from skebflow.objectives import bind_objective, make_regularizers
from skebflow.preprocessing import Chain, make_preprocessing
from skebflow.training import TrainConfig, Trainer

__all__ = [
    "ANYTIME_OBJECTIVES",
    "ANYTIME_TASKS",
    "AnytimeTask",
    "anytime_markdown",
    "checkpoint_times",
    "make_anytime_tasks",
    "plot_anytime",
    "resize_digits",
    "run_anytime",
    "run_task",
    "time_log_normalizer",
    "time_to_target",
]

#: The objectives compared, in report order; ``"ml"`` is the reference.
ANYTIME_OBJECTIVES: tuple[str, ...] = ("ml", "ssm", "dsm", "fdssm")
#: The tasks: ``<architecture>-<D>`` for the FC flow, ``conv-<C>x<H>x<W>`` for the CNN.
ANYTIME_TASKS: tuple[str, ...] = ("fc-784", "fc-3072", "conv-1x28x28", "conv-3x32x32")
#: The optimizer recipe shared by every objective (``bench nll``'s).
LEARNING_RATE = 1e-3
BATCH_SIZE = 100
EMA_DECAY = 0.999
#: "Reached ML's quality": a held-out NLL at most this fraction above ML's final one.
TARGET_FRACTION = 0.01
#: Checkpoints per objective (besides the untrained flow at 0 s), geometric in time from
#: this fraction of the budget to the budget.
N_CHECKPOINTS = 30
FIRST_CHECKPOINT_FRACTION = 0.01
#: Pixel values of the digits and the box of the logit after dequantization.
DIGIT_BOUNDS = (0, 16)
#: The tasks' image shapes, full size and ``--quick`` size.
_SHAPES = {
    "fc-784": ((1, 28, 28), (1, 4, 4)),
    "fc-3072": ((3, 32, 32), (3, 4, 4)),
    "conv-1x28x28": ((1, 28, 28), (1, 4, 4)),
    "conv-3x32x32": ((3, 32, 32), (3, 4, 4)),
}
#: Default budget per objective, seconds (full size; ``--budget`` overrides it).
DEFAULT_BUDGETS = {"fc-784": 120.0, "fc-3072": 600.0, "conv-1x28x28": 300.0, "conv-3x32x32": 600.0}
#: ``--quick``: budget per objective (s), checkpoints, training and test images.
QUICK_BUDGET = 0.25
QUICK_CHECKPOINTS = 6
QUICK_ROWS = (200, 100)

Clock = Callable[[], float]
Evaluate = Callable[[EnergyFlow], float]


@dataclass(frozen=True)
class AnytimeTask:
    """One task of ``bench anytime``: a flow builder and the digits at an image size.

    Attributes
    ----------
    name : str
        A key of :data:`ANYTIME_TASKS` (the same name at the ``--quick`` size).
    architecture : str
        ``"fc"`` (the paper's FC flow, 2 dense layers) or ``"conv"`` (the paper's CNN).
    image_shape : tuple of int
        ``(C, H, W)`` of the images; ``D = C·H·W``.
    budget : float
        Default training seconds per objective.
    n_train, n_test : int or None
        Images kept of the split (``None``: all, 1,437 and 360).

    Examples
    --------
    >>> task = make_anytime_tasks(("conv-3x32x32",))[0]
    >>> task.features, task.architecture, task.budget
    (3072, 'conv', 600.0)
    """

    name: str
    architecture: str
    image_shape: tuple[int, int, int]
    budget: float
    n_train: int | None = None
    n_test: int | None = None

    @property
    def features(self) -> int:
        """The dimension ``D = C·H·W``."""
        return math.prod(self.image_shape)

    def build(self) -> EnergyFlow:
        """Build the untrained flow (float32, on the CPU; deterministic)."""
        if self.architecture == "fc":
            return ARCHITECTURES["fc"](self.features, n_blocks=2)
        return ARCHITECTURES["conv"](self.features, image_shape=self.image_shape, **PAPER_CNN)

    def draw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(train, test)``: integer images as rows in C·H·W order, float64."""
        train, test = load_digits_integer(random_state=seed)
        train, test = train[: self.n_train], test[: self.n_test]
        return resize_digits(train, self.image_shape), resize_digits(test, self.image_shape)


def make_anytime_tasks(
    names: Sequence[str] = ANYTIME_TASKS, *, quick: bool = False
) -> list[AnytimeTask]:
    """Build the tasks of ``bench anytime``, full size or at the ``--quick`` size.

    Parameters
    ----------
    names : sequence of str, default=ANYTIME_TASKS
        Keys of :data:`ANYTIME_TASKS`.
    quick : bool, default=False
        Tiny images (4×4, with the task's channels), :data:`QUICK_ROWS` images and
        :data:`QUICK_BUDGET` seconds: a smoke run of seconds.

    Returns
    -------
    list of AnytimeTask
        In the order of ``names``.

    Raises
    ------
    ValueError
        For an unknown task name.

    Examples
    --------
    >>> [(t.name, t.features) for t in make_anytime_tasks(("fc-784", "fc-3072"), quick=True)]
    [('fc-784', 16), ('fc-3072', 48)]
    """
    unknown = [name for name in names if name not in _SHAPES]
    if unknown:
        raise ValueError(f"Unknown anytime tasks {unknown}; valid: {list(ANYTIME_TASKS)}.")
    tasks = []
    for name in names:
        full, small = _SHAPES[name]
        architecture = name.split("-", 1)[0]
        if quick:
            tasks.append(AnytimeTask(name, architecture, small, QUICK_BUDGET, *QUICK_ROWS))
        else:
            tasks.append(AnytimeTask(name, architecture, full, DEFAULT_BUDGETS[name]))
    return tasks


def resize_digits(images: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Resize 8×8 integer digits to ``(C, H, W)`` rows, integers in [0, 16] again.

    Bilinear interpolation (``align_corners=False``) to ``H × W``, rounded to the nearest
    integer and clipped to [0, 16], so the images can be dequantized as the 8×8 ones;
    ``C > 1`` repeats the grey image in every channel.

    Parameters
    ----------
    images : ndarray of shape (n, 64)
        Digits as integer pixel values.
    image_shape : sequence of int
        ``(C, H, W)``.

    Returns
    -------
    ndarray of shape (n, C·H·W), dtype float64

    Examples
    --------
    >>> digit = np.arange(64.0).reshape(1, 64) % 17
    >>> rows = resize_digits(digit, (3, 28, 28))
    >>> rows.shape, bool((rows == np.round(rows)).all()), bool(0 <= rows.min() <= rows.max() <= 16)
    ((1, 2352), True, True)
    >>> bool((resize_digits(digit, (1, 8, 8)) == digit).all())
    True
    """
    channels, height, width = (int(size) for size in image_shape)
    grey = torch.as_tensor(images, dtype=torch.float64).reshape(-1, 1, 8, 8)
    if (height, width) != (8, 8):
        grey = functional.interpolate(
            grey, size=(height, width), mode="bilinear", align_corners=False
        )
    grey = grey.round().clamp(*DIGIT_BOUNDS)
    return grey.expand(-1, channels, -1, -1).reshape(len(grey), -1).numpy().copy()


def checkpoint_times(
    budget: float, n: int = N_CHECKPOINTS, *, first_fraction: float = FIRST_CHECKPOINT_FRACTION
) -> list[float]:
    """Return ``n`` checkpoint times, geometric from ``first_fraction * budget`` to ``budget``.

    Parameters
    ----------
    budget : float
        Training seconds per objective; the last checkpoint.
    n : int, default=N_CHECKPOINTS
        Number of checkpoints (at least 1; 1 gives the budget alone).
    first_fraction : float, default=FIRST_CHECKPOINT_FRACTION
        The first checkpoint as a fraction of the budget, in (0, 1].

    Returns
    -------
    list of float
        Increasing, the last one equal to ``budget``.

    Examples
    --------
    >>> [round(t, 3) for t in checkpoint_times(10.0, 3, first_fraction=0.01)]
    [0.1, 1.0, 10.0]
    """
    if budget <= 0 or n < 1 or not 0 < first_fraction <= 1:
        raise ValueError(
            f"checkpoint_times needs budget > 0, n >= 1 and 0 < first_fraction <= 1; got "
            f"{budget!r}, {n!r}, {first_fraction!r}."
        )
    if n == 1:
        return [float(budget)]
    ratio = first_fraction ** (1.0 / (n - 1))
    times = [budget * ratio ** (n - 1 - k) for k in range(n)]
    times[-1] = float(budget)
    return times


def time_to_target(seconds: Sequence[float], values: Sequence[float], target: float) -> dict:
    """When a curve of held-out NLLs first gets to ``target`` or below, and whether it stays.

    A non-finite value never counts as reached.

    Parameters
    ----------
    seconds : sequence of float
        Training seconds of the checkpoints, increasing.
    values : sequence of float
        The held-out NLL at each checkpoint (lower is better).
    target : float
        The NLL to reach.

    Returns
    -------
    dict
        ``seconds`` (of the first checkpoint at or below ``target``; ``None`` when never),
        ``index`` (of that checkpoint), ``after`` (the seconds of the checkpoint before it,
        so the crossing lies in ``(after, seconds]``; ``None`` when reached at the first
        checkpoint), ``stays_from`` (the seconds of the first checkpoint from which every
        later one is at or below ``target``; ``None`` when the last one is not) and ``lost``
        (reached, but the last checkpoint is above ``target``).

    Examples
    --------
    >>> time_to_target([0, 1, 2, 3], [9.0, 5.0, 7.0, 4.0], target=6.0)
    {'seconds': 1.0, 'index': 1, 'after': 0.0, 'stays_from': 3.0, 'lost': False}
    >>> time_to_target([0, 1, 2], [9.0, 5.0, 7.0], target=6.0)["lost"]
    True
    >>> time_to_target([0, 1], [9.0, 8.0], target=6.0)["seconds"] is None
    True
    """
    if len(seconds) != len(values):
        raise ValueError(f"{len(seconds)} times but {len(values)} values.")
    within = [math.isfinite(v) and v <= target for v in values]
    first = within.index(True) if any(within) else None
    stays = None
    if within and within[-1]:
        stays = len(within) - 1
        while stays > 0 and within[stays - 1]:
            stays -= 1
    return {
        "seconds": None if first is None else float(seconds[first]),
        "index": first,
        "after": None if not first else float(seconds[first - 1]),
        "stays_from": None if stays is None else float(seconds[stays]),
        "lost": first is not None and not within[-1],
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Run:
    """One objective's trainer, its training clock and its checkpoints."""

    objective: str
    trainer: Trainer
    data: Tensor
    prepare: Callable[[Tensor, torch.Generator], Tensor]
    device: torch.device
    features: int
    seconds: float = 0.0
    whitening_seconds: float = 0.0
    n_skipped: int = 0
    error: str | None = None
    points: list[dict] = field(default_factory=list)
    _order: Tensor | None = None
    _cursor: int = 0

    def step(self) -> None:
        """Gather a minibatch, prepare it (noise, logit) and run one trainer step."""
        n, batch = self.data.shape[0], min(BATCH_SIZE, self.data.shape[0])
        if self._order is None or self._cursor + batch > n:
            generator = self.trainer.generator
            self._order = torch.randperm(n, generator=generator, device=generator.device)
            self._cursor = 0
        rows = self._order[self._cursor : self._cursor + batch].to(self.data.device)
        self._cursor += batch
        loss = self.trainer.step(self.prepare(self.data[rows], self.trainer.generator))
        if loss is None:
            self.n_skipped += 1
        else:
            loss.cpu()  # as the trainer's epoch reads every loss back
        _synchronize(self.device)

    def warm_up(self, n_steps: int) -> None:
        """Run untimed steps (on a throwaway run); a failure is left to the timed run."""
        try:
            for _ in range(n_steps):
                self.step()
        except (FloatingPointError, RuntimeError, ValueError):
            pass

    def advance(self, until: float, clock: Clock) -> None:
        """Train until the training clock reaches ``until`` seconds (at least one step)."""
        start = clock()
        try:
            while True:
                self.step()
                now = clock()
                if self.seconds + (now - start) >= until:
                    break
        except (FloatingPointError, RuntimeError, ValueError) as exc:
            now = clock()
            self.error = f"{type(exc).__name__}: {exc}"
        self.seconds += now - start

    def checkpoint(self, evaluate: Evaluate, clock: Clock) -> None:
        """Evaluate the kept (EMA) flow; the evaluation's time is recorded, not trained."""
        start = clock()
        nll = float(evaluate(self.trainer.kept))
        finite = math.isfinite(nll)
        self.points.append(
            {
                "seconds": self.seconds,
                "steps": self.trainer.n_steps,
                # JSON has no NaN: a non-finite NLL is kept as its text and counted.
                "nll": nll if finite else None,
                "nonfinite_nll": None if finite else repr(nll),
                "bits_per_dim": nll / (self.features * math.log(2.0)) if finite else None,
                "evaluation_seconds": clock() - start,
            }
        )


def _exact_nll(chain: Chain, test: Tensor, seed: int) -> Evaluate:
    """Return ``evaluate(flow) -> NLL``, nats per image, of the fixed dequantized test set."""
    noise = torch.as_tensor(_rng(3, seed).random(tuple(test.shape)), dtype=torch.float64)
    with torch.no_grad():
        # The chain's forward adds the cell centre 0.5 itself (Dequantize.forward).
        y_test, ladj = chain.forward(test + noise.to(test.device) - 0.5)
    offset = float(ladj.mean())

    def evaluate(flow: EnergyFlow) -> float:
        model = copy.deepcopy(flow).to(torch.float64).requires_grad_(False).eval()
        with torch.no_grad():
            return -(float(model.log_prob(y_test).mean()) + offset)

    return evaluate


def time_log_normalizer(
    flow: EnergyFlow, device: torch.device, dtype: torch.dtype, repeats: int = 3
) -> float:
    """Return the median seconds of one exact ``log_normalizer()`` (no cached factors).

    The flow is copied, frozen and put in ``dtype`` on ``device`` (as the EMA copy that
    an estimator's validation scores); every repeat bumps the weights' versions first, as
    an EMA update does, so that no cached factorization is reused.

    Examples
    --------
    >>> from skebflow.nn import build_fc
    >>> time_log_normalizer(build_fc(8), torch.device("cpu"), torch.float32) > 0
    True
    """
    model = copy.deepcopy(flow).to(device=device, dtype=dtype).requires_grad_(False).eval()
    times = []
    for _ in range(max(1, repeats)):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(1.0)
            _synchronize(device)
            start = time.perf_counter()
            float(model.log_normalizer())
            _synchronize(device)
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def run_task(
    task: AnytimeTask,
    objectives: Sequence[str] = ANYTIME_OBJECTIVES,
    *,
    budget: float | None = None,
    n_checkpoints: int = N_CHECKPOINTS,
    first_fraction: float = FIRST_CHECKPOINT_FRACTION,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    learning_rate: float = LEARNING_RATE,
    barrier: bool = True,
    whiten: bool = True,
    warmup: int = 1,
    log: Callable[[str], None] = print,
    clock: Clock = time.perf_counter,
    evaluate: Evaluate | None = None,
) -> dict:
    """Train every objective on one task within a time budget; record the NLL curves.

    Parameters
    ----------
    task : AnytimeTask
        From :func:`make_anytime_tasks`.
    objectives : sequence of str, default=ANYTIME_OBJECTIVES
        Objectives of :func:`~skebflow.objectives.bind_objective`; ``"ml"`` gives the
        reference of the targets.
    budget : float or None, default=None
        Training seconds per objective; ``None`` takes the task's.
    n_checkpoints : int, default=N_CHECKPOINTS
        Checkpoints after the one of the untrained flow (:func:`checkpoint_times`).
    first_fraction : float, default=FIRST_CHECKPOINT_FRACTION
        The first checkpoint as a fraction of the budget.
    seed : int, default=0
        Seed of the split, the test set's dequantization noise and the training noise.
    device : torch.device or str, default="cpu"
        Where everything runs (flows, data, generators, evaluations).
    dtype : torch.dtype, default=torch.float32
        Training precision (evaluations run in float64).
    learning_rate : float, default=LEARNING_RATE
        Adam's learning rate, the same for every objective.
    barrier : bool, default=True
        Give the score-matching objectives the estimator's default singular-value barrier.
    whiten : bool, default=True
        Train the objectives that the estimator's ``whiten="auto"`` whitens (score
        matching on the FC flow) behind a fixed whitening map; its fit is counted on each
        such objective's clock.
    warmup : int, default=1
        Untimed steps of each objective on a throwaway copy before its clock starts, so
        that one-time costs of the process (lazy initializations, the first call of a
        kernel) fall on no objective.
    log : callable, default=print
        Receives one line per objective.
    clock : callable, default=time.perf_counter
        The training clock's source of seconds.
    evaluate : callable or None, default=None
        ``evaluate(flow) -> NLL`` at a checkpoint; ``None`` is the exact held-out NLL in
        nats per image. Its time is never counted as training.

    Returns
    -------
    dict
        ``task``, ``architecture``, ``image_shape``, ``features``, ``n_train``, ``n_test``,
        ``budget``, ``checkpoints`` (the scheduled times), ``log_normalizer_ms``,
        ``reference_nll`` (ML's final NLL, or ``None``), ``target_nll`` and ``runs``: one
        dict per objective with ``objective``, ``whitening_seconds`` (0 without one),
        ``points`` (``seconds``, ``steps``, ``nll``, ``bits_per_dim``,
        ``evaluation_seconds`` per checkpoint; the first is the untrained flow, at 0 s or
        once its whitening is fitted), ``training_seconds``, ``steps``, ``steps_per_second``,
        ``n_skipped``, ``n_nonfinite_checkpoints``, ``final_nll``,
        ``final_bits_per_dim``, ``best_nll``, ``error``, ``target`` (:func:`time_to_target`,
        or ``None`` without a reference), ``time_ratio_to_ml`` (its time to the target over
        ML's) and ``ml_seconds_to_final`` (when ML's curve first gets to this final NLL).

    Examples
    --------
    >>> task = make_anytime_tasks(("fc-784",), quick=True)[0]
    >>> result = run_task(task, ("ml", "dsm"), budget=0.02, n_checkpoints=2, log=lambda s: None)
    >>> [run["training_seconds"] >= 0.02 for run in result["runs"]]
    [True, True]
    >>> [1 < len(run["points"]) <= 3 for run in result["runs"]]
    [True, True]
    """
    device = torch.device(device)
    budget = task.budget if budget is None else float(budget)
    schedule = checkpoint_times(budget, n_checkpoints, first_fraction=first_fraction)
    train_rows, test_rows = task.draw(seed)
    chain = make_preprocessing("logit", bounds=DIGIT_BOUNDS, dequantize=True)
    train = torch.as_tensor(train_rows, dtype=torch.float64)
    chain = chain.fit(train).to(device=device, dtype=torch.float64)
    train = train.to(device)
    test = torch.as_tensor(test_rows, dtype=torch.float64, device=device)
    if evaluate is None:
        evaluate = _exact_nll(chain, test, seed)

    def prepare(batch: Tensor, generator: torch.Generator) -> Tensor:
        return chain.forward(chain.augment(batch, generator))[0].to(dtype)

    initial = task.build()
    log_normalizer_seconds = time_log_normalizer(initial, device, dtype)
    config = TrainConfig(learning_rate=learning_rate, batch_size=BATCH_SIZE, ema_decay=EMA_DECAY)
    threshold = AUTO_MIN_SINGULAR_VALUE if barrier else None

    whitened: dict[str, tuple[EnergyFlow, float]] = {}

    def start_flow(objective: str) -> tuple[EnergyFlow, float]:
        """Return the objective's initial flow and its whitening's seconds (0 without)."""
        if not (
            whiten
            and auto_whiten(
                objective, architecture=task.architecture, match_after_preprocessing=True
            )
        ):
            return initial, 0.0
        if "flow" not in whitened:
            begin = clock()
            generator = torch.Generator(device=device).manual_seed(seed + 2)
            with torch.no_grad():
                y = chain.forward(chain.augment(train, generator))[0]
            layer = Whitening(task.features).to(device=device, dtype=torch.float64)
            layer.fit(y, covariance=whitening_covariance(y))
            _synchronize(device)
            seconds = clock() - begin
            whitened["flow"] = (EnergyFlow([layer, *initial.layers], task.features), seconds)
        return whitened["flow"]

    def make_run(objective: str) -> _Run:
        flow, seconds = start_flow(objective)
        trainer = Trainer(
            copy.deepcopy(flow).to(device=device, dtype=dtype).train(),
            bind_objective(objective),
            config,
            generator=torch.Generator(device=device).manual_seed(seed + 1),
            regularizers=make_regularizers(objective, threshold),
        )
        run = _Run(objective, trainer, train, prepare, device, task.features)
        run.seconds = run.whitening_seconds = seconds  # on the clock from the start
        return run

    runs = []
    for objective in objectives:
        make_run(objective).warm_up(warmup)
        runs.append(make_run(objective))
    start = time.perf_counter()
    for run in runs:
        run.checkpoint(evaluate, clock)
    for k, until in enumerate(schedule):
        shift = k % len(runs)
        for run in runs[shift:] + runs[:shift]:
            if run.error is None and run.seconds < until:
                run.advance(until, clock)
                run.checkpoint(evaluate, clock)
    result = {
        "task": task.name,
        "architecture": task.architecture,
        "image_shape": list(task.image_shape),
        "features": task.features,
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "budget": budget,
        "checkpoints": schedule,
        "log_normalizer_ms": 1e3 * log_normalizer_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    result["runs"] = [_summary(run) for run in runs]
    _add_targets(result)
    for run in result["runs"]:
        log(_line(task.name, run))
    return result


def _summary(run: _Run) -> dict:
    finite = [p["nll"] for p in run.points if p["nll"] is not None]
    final = run.points[-1]
    steps = run.trainer.n_steps
    return {
        "objective": run.objective,
        "whitening_seconds": run.whitening_seconds,
        "points": run.points,
        "training_seconds": run.seconds,
        "steps": steps,
        "steps_per_second": steps / run.seconds if run.seconds > 0 else None,
        "n_skipped": run.n_skipped,
        "n_nonfinite_checkpoints": sum(p["nonfinite_nll"] is not None for p in run.points),
        "final_nll": final["nll"],
        "final_bits_per_dim": final["bits_per_dim"],
        "best_nll": min(finite) if finite else None,
        "error": run.error,
    }


def _add_targets(result: dict) -> None:
    """Set the reference (ML's final NLL), the target and each run's time to it."""
    ml = next((r for r in result["runs"] if r["objective"] == "ml"), None)
    reference = None if ml is None or ml["error"] else ml["final_nll"]
    target = None if reference is None else reference + TARGET_FRACTION * abs(reference)
    result.update(reference_nll=reference, target_nll=target, target_fraction=TARGET_FRACTION)
    ml_seconds = None
    if target is not None:
        for run in result["runs"]:
            seconds = [p["seconds"] for p in run["points"]]
            values = [math.nan if p["nll"] is None else p["nll"] for p in run["points"]]
            run["target"] = time_to_target(seconds, values, target)
        ml_seconds = ml["target"]["seconds"]
    for run in result["runs"]:
        run.setdefault("target", None)
        reached = None if run["target"] is None else run["target"]["seconds"]
        ratio = None
        if reached is not None and ml_seconds:
            ratio = reached / ml_seconds
        run["time_ratio_to_ml"] = ratio
        # The other way round: when ML's curve first gets to this run's final NLL.
        run["ml_seconds_to_final"] = None
        if reference is not None and run["final_nll"] is not None:
            seconds = [p["seconds"] for p in ml["points"]]
            values = [math.nan if p["nll"] is None else p["nll"] for p in ml["points"]]
            crossing = time_to_target(seconds, values, run["final_nll"])
            run["ml_seconds_to_final"] = crossing["seconds"]
    result["target"] = ml["target"] if ml is not None else None


def _line(name: str, run: dict) -> str:
    if run["error"]:
        outcome = f"failed after {run['training_seconds']:.1f} s: {run['error'][:70]}"
    else:
        outcome = f"final NLL {format_number(run['final_nll'])}"
    reached = run["target"]["seconds"] if run["target"] else None
    when = "not reached" if reached is None else f"reached at {reached:.1f} s"
    return (
        f"{name} {run['objective']}: {run['steps']} steps in {run['training_seconds']:.1f} s, "
        f"{outcome}, ML's NLL + {100 * TARGET_FRACTION:g} % {when}"
    )


def run_anytime(
    tasks: Sequence[AnytimeTask],
    objectives: Sequence[str] = ANYTIME_OBJECTIVES,
    **options: object,
) -> list[dict]:
    """Run :func:`run_task` on every task; keyword ``options`` go to it.

    Examples
    --------
    >>> tasks = make_anytime_tasks(("conv-1x28x28",), quick=True)
    >>> [r["task"] for r in run_anytime(tasks, ("ml",), budget=0.01, n_checkpoints=1,
    ...                                  log=lambda s: None)]
    ['conv-1x28x28']
    """
    return [run_task(task, objectives, **options) for task in tasks]


def _seconds(value: float | None) -> str:
    return "not reached in the budget" if value is None else f"{value:.1f}"


def anytime_markdown(results: Sequence[dict]) -> str:
    """Render ``bench anytime`` results: one table per task.

    Parameters
    ----------
    results : sequence of dict
        From :func:`run_anytime`.

    Returns
    -------
    str
        Markdown text.

    Examples
    --------
    >>> run = {"objective": "ml", "steps": 10, "steps_per_second": 5.0, "final_nll": 101.0,
    ...        "final_bits_per_dim": 1.0, "best_nll": 100.0, "error": None, "n_skipped": 0,
    ...        "time_ratio_to_ml": 1.0, "training_seconds": 2.0, "ml_seconds_to_final": 1.5,
    ...        "target": {"seconds": 1.5, "after": 1.0, "stays_from": 1.5, "lost": False}}
    >>> result = {"task": "fc-16", "features": 16, "architecture": "fc",
    ...           "image_shape": [1, 4, 4], "n_train": 200, "n_test": 100, "budget": 2.0,
    ...           "reference_nll": 101.0, "target_nll": 102.01, "log_normalizer_ms": 0.5,
    ...           "runs": [run]}
    >>> print(anytime_markdown([result]).splitlines()[-1])
    | ml | 5.0 | 10 | 101.00 | 1.0000 | 100.00 | 1.5 (after 1.0) | 1.5 | 1.00× | 1.5 | 0.0025 |
    """
    lines: list[str] = []
    for result in results:
        shape = "×".join(map(str, result["image_shape"]))
        flow = "FC flow (2 dense layers)" if result["architecture"] == "fc" else "the paper's CNN"
        lines += [
            f"### {result['task']}: {flow}, digits as {shape} images (D = {result['features']})",
            "",
            f"{result['n_train']} training / {result['n_test']} test images; "
            f"{result['budget']:g} s of training per objective.",
        ]
        if result["reference_nll"] is not None:
            lines.append(
                f"ML's final held-out NLL: {result['reference_nll']:.2f} nats per image; "
                f"target (+{100 * TARGET_FRACTION:g} %): {result['target_nll']:.2f}."
            )
        else:
            lines.append("No ML reference (not run or failed): no target.")
        lines += [
            f"One exact log Z (what a per-epoch validation adds): "
            f"{result['log_normalizer_ms']:.1f} ms.",
            "",
            "| objective | steps/s | steps | final NLL (nats) | final bits/dim | best NLL "
            "| within 1 % of ML's final at (s) | stays within from (s) | time ÷ ML's "
            "| ML reaches this final NLL at (s) | log Z ÷ step |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in result["runs"]:
            target = run["target"] or {}
            reached = target.get("seconds")
            when = _seconds(reached)
            if reached is not None and target.get("after") is not None:
                when += f" (after {target['after']:.1f})"
            if target.get("lost"):
                when += ", lost by the end"
            rate = run["steps_per_second"]
            cost = None if not rate else result["log_normalizer_ms"] * 1e-3 * rate
            name = run["objective"] + (f" (failed: {run['error'][:40]})" if run["error"] else "")
            if run.get("n_nonfinite_checkpoints"):
                name += f" ({run['n_nonfinite_checkpoints']} checkpoints with a non-finite NLL)"
            ratio = format_number(run["time_ratio_to_ml"])
            bits = format_number(run["final_bits_per_dim"], 4)
            lines.append(
                f"| {name} | {format_number(rate, 1)} | {run['steps']} | "
                f"{format_number(run['final_nll'])} | {bits} "
                f"| {format_number(run['best_nll'])} | {when} | "
                f"{_seconds(target.get('stays_from')) if target else '–'} | "
                f"{ratio + '×' if ratio != '–' else '–'} | "
                f"{format_number(run.get('ml_seconds_to_final'), 1)} | {format_number(cost, 4)} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_anytime(
    results: Sequence[dict], folder: Path, log: Callable[[str], None] = print
) -> list[Path]:
    """Plot held-out NLL against training seconds, one file per task (needs matplotlib).

    Each file ``anytime-<task>.png`` has one line per objective, in logarithmic time on
    the left and in linear time on the right (its NLL axis fitted to the second half of
    the curves), and the target (ML's final NLL plus :data:`TARGET_FRACTION`) dotted.

    Parameters
    ----------
    results : sequence of dict
        From :func:`run_anytime`.
    folder : Path
        Where the images are written.
    log : callable, default=print
        Told when matplotlib is missing (the plots are then skipped).

    Returns
    -------
    list of Path
        The images written (empty without matplotlib).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: skipping the plots (pip install matplotlib).")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for result in results:
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
        finals = []
        for run in result["runs"]:
            points = [p for p in run["points"] if p["nll"] is not None]
            label = run["objective"] + (" (failed)" if run["error"] else "")
            xs, ys = [p["seconds"] for p in points], [p["nll"] for p in points]
            later = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0]
            (line,) = left.plot([x for x, _ in later], [y for _, y in later])
            line.set(marker="o", markersize=3, label=label)
            right.plot(xs, ys, "o-", markersize=3, color=line.get_color(), label=label)
            finals += ys[len(ys) // 2 :]
        target, reference = result["target_nll"], result["reference_nll"]
        for axis in (left, right):
            if target is not None:
                axis.axhline(target, color="black", linewidth=0.9, linestyle=":")
            axis.set(xlabel="training seconds (evaluations excluded)", ylabel="held-out NLL, nats")
            axis.grid(alpha=0.3)
        left.set(xscale="log", title="logarithmic time (checkpoints after 0 s)")
        if finals:
            low = min(finals + ([reference] if reference is not None else []))
            high = max(finals + ([target] if target is not None else []))
            pad = max(0.05 * (high - low), 0.01 * abs(low), 1e-3)
            right.set_ylim(low - pad, high + 4 * pad)
        right.set(xlim=(0, 1.02 * result["budget"]), title="linear time, from 0 s")
        handles, labels = left.get_legend_handles_labels()
        handles.append(plt.Line2D([], [], color="black", linewidth=0.9, linestyle=":"))
        labels.append(f"ML's final NLL + {100 * TARGET_FRACTION:g} %")
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
        shape = "×".join(map(str, result["image_shape"]))
        fig.suptitle(
            f"bench anytime, {result['task']} (digits as {shape}, D = {result['features']}): "
            f"held-out NLL of the EMA flow; one exact log Z = {result['log_normalizer_ms']:.1f} ms"
        )
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        path = folder / f"anytime-{result['task']}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
