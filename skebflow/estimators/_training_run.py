"""One training of an ``EBFlowDensity``'s flow: the one fit path, and what it produces.

A :class:`TrainingRun` owns everything one training needs and keeps between calls: the
fitted preprocessing chain, the flow, the :class:`~skebflow.training.Trainer` (optimizer,
schedule, EMA, random stream, history), the jitter of degenerate data and the settings.
It serves the three ways to train, as scikit-learn's MLP (``_fit(incremental=...)``) and
skorch (``fit`` → ``partial_fit`` → ``fit_loop``) serve theirs:

- a fresh fit: :meth:`TrainingRun.start`, then :meth:`TrainingRun.fit` (epochs with
  early stopping on a validation split, the untrained flow's score as the baseline of the
  end-of-fit checks);
- a warm start: :meth:`TrainingRun.warm` continues a kept run (same optimizer moments,
  schedule, EMA and generator) or starts a new one from the fitted weights;
- ``partial_fit``: :meth:`TrainingRun.start` on the first chunk, then
  :meth:`TrainingRun.epoch` per chunk.

Each training call returns one :class:`TrainingOutcome`, from which the estimator sets
its fitted attributes in one place.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.exceptions import ConvergenceWarning, DataDimensionalityWarning
from torch import Tensor

from skebflow.estimators._defaults import (
    DEGENERATE_JITTER,
    DIVERGENCE_NOISE_STANDARD_ERRORS,
    MAX_VALIDATION_ROWS,
    TRAINING_COPIES,
    WHITENING_MIN_VARIANCE,
)
from skebflow.estimators._divergence import warn_divergence
from skebflow.estimators._settings import FitSettings
from skebflow.exceptions import GrossOutlierWarning, PointMassWarning, TrainingDivergedError
from skebflow.nn import EnergyFlow
from skebflow.preprocessing import (
    Chain,
    find_degeneracy,
    find_gross_outliers,
    find_point_masses,
    with_preprocessing,
    without_preprocessing,
)
from skebflow.training import PrepareFn, Trainer, TrainResult, diagnose
from skebflow.utils import as_tensor, intra_op_threads, user_stacklevel

__all__ = [
    "TrainingOutcome",
    "TrainingRun",
    "run_fit",
    "run_partial_fit",
    "validation_split",
    "whitening_covariance",
]


@dataclass(frozen=True)
class TrainingOutcome:
    """What one training call produces: everything the estimator's fitted attributes hold.

    ``flow`` is the kept flow in float64, frozen and in eval mode, without the
    preprocessing; ``history`` is the run's (a fit's own epochs, or every epoch of
    ``partial_fit``); ``divergence`` the end-of-fit findings (empty for a healthy fit);
    ``validation_index`` the rows of ``X`` held out of training (``None`` when none were,
    as in ``partial_fit``).
    """

    settings: FitSettings
    flow: EnergyFlow
    chain: Chain
    log_normalizer: float
    jitter: float
    batch_size: int
    ema_decay: float | None
    learning_rate: float
    n_iter: int
    loss_curve: list[float]
    validation_scores: list[float]
    n_skipped_steps: int
    best_iteration: int | None
    final_learning_rate: float
    divergence: list[str]
    interrupted: bool = False
    validation_index: np.ndarray | None = None


class TrainingRun:
    """One training of a flow, kept between calls (see the module's docstring).

    Parameters
    ----------
    settings : FitSettings
        The resolved settings.
    chain : Chain
        The fitted preprocessing, on the settings' device in float64.
    flow : EnergyFlow
        The flow to train (untrained, or a copy of fitted weights); moved to the
        settings' device and dtype and trained in place.
    jitter : float
        Standard deviation of the Gaussian jitter added to every training batch.
    n_train : int
        Training rows (the batch size and EMA decay follow from it).
    incremental : bool
        Whether the run serves ``partial_fit``.
    """

    def __init__(
        self,
        settings: FitSettings,
        chain: Chain,
        flow: EnergyFlow,
        jitter: float,
        n_train: int,
        *,
        incremental: bool = False,
    ) -> None:
        model = flow.to(device=settings.device, dtype=settings.dtype)
        if not settings.match_after_preprocessing:
            model = with_preprocessing(model, copy.deepcopy(chain).to(dtype=settings.dtype))
        generator = torch.Generator(device=settings.device).manual_seed(settings.seed + 1)
        self.settings, self.chain, self.jitter = settings, chain, jitter
        self.incremental = incremental
        self.trainer = Trainer(
            model,
            settings.loss(),
            settings.train_config(n_train, whole_passes=incremental),
            generator=generator,
            regularizers=settings.regularizers(),
        )

    # --------------------------------------------------------------- beginnings
    @classmethod
    def start(
        cls,
        settings: FitSettings,
        x_all: Tensor,
        x_train: Tensor,
        *,
        cpu_generator: torch.Generator,
        chain: Chain | None = None,
        incremental: bool = False,
    ) -> TrainingRun:
        """Start a run on a new flow.

        The preprocessing is fitted to ``x_train`` (to all rows ``x_all`` for a logit box
        inferred from the data: the validation rows are scored and must lie inside it),
        unless a fitted ``chain`` is given (``fit_preprocessing``'s, copied). The flow is
        built with ``cpu_generator``. Degenerate training data get a warned-of jitter.
        """
        if chain is None:
            inferred_box = settings.preprocessing == "logit" and settings.bounds is None
            chain = settings.build_chain().fit(x_all if inferred_box else x_train)
        else:
            chain = copy.deepcopy(chain)
        chain = chain.to(device=settings.device, dtype=torch.float64)
        _warn_about_gross_outliers(x_all)  # all rows: their indices are the user's
        _check_training_memory(settings)
        flow = settings.build_flow(cpu_generator)
        chain.check(x_all.to(settings.device), training=True)
        jitter = 0.0 if settings.dequantize else _degenerate_jitter(chain, x_train, settings)
        if settings.whiten:
            _fit_whitening(flow, chain, x_train, jitter, settings)
        return cls(settings, chain, flow, jitter, len(x_train), incremental=incremental)

    @classmethod
    def warm(
        cls,
        settings: FitSettings,
        x_all: Tensor,
        x_train: Tensor,
        *,
        flow: EnergyFlow,
        chain: Chain,
        jitter: float,
        kept: TrainingRun | None,
    ) -> TrainingRun:
        """Continue from a fitted flow and its preprocessing (``warm_start=True``).

        A ``kept`` run of a warm fit with the same architecture, device, dtype and
        ``match_after_preprocessing`` continues exactly (its optimizer moments, schedule,
        EMA, barrier and random stream; changed hyperparameters apply); otherwise a new
        run starts from a copy of ``flow`` with a new optimizer. The flow keeps its
        whitening map, or its lack of one.
        """
        # The fitted flow keeps its whitening (or its lack of one), whatever ``whiten``
        # resolves to now: a warm start continues the same model.
        settings = dataclasses.replace(settings, whiten=flow.whitened)
        chain = chain.to(device=settings.device, dtype=torch.float64)
        chain.check(x_all.to(settings.device), training=True)
        if kept is not None and not kept.incremental:
            if kept.settings.trainer_key == settings.trainer_key:
                kept._resume(settings, chain, len(x_train))
                return kept
        flow = copy.deepcopy(flow).requires_grad_(True)
        return cls(settings, chain, flow, jitter, len(x_train))

    def _resume(self, settings: FitSettings, chain: Chain, n_train: int) -> None:
        """Take new settings for the next fit, keeping the trainer's state."""
        trainer = self.trainer
        trainer.loss_fn, trainer.config = settings.loss(), settings.train_config(n_train)
        regularizers = settings.regularizers()
        if _thresholds(trainer.regularizers) != _thresholds(regularizers):
            trainer.regularizers = regularizers  # else the barrier keeps its state
        self.settings, self.chain = settings, chain

    # ---------------------------------------------------------------- training
    def fit(self, x_train: Tensor, x_val: Tensor, *, baseline: bool) -> TrainingOutcome:
        """Train until the stopping rule fires or ``max_iter`` epochs ran.

        With ``baseline`` the untrained flow's validation score is taken first: the
        untrained flow is a candidate to keep (a whitened flow starts as the Gaussian fit of
        the data, a model that a short or unstable fit may not beat), and the end-of-fit
        checks report a fit that did not improve on it. Warns about skipped steps, a run
        that hit ``max_iter`` and a diverged fit; raises ``FloatingPointError`` with this
        configuration's remedies when training meets non-finite numbers it cannot step
        over or the trained flow has a singular linear layer.
        """
        settings, device = self.settings, self.settings.device
        x_train, x_val = x_train.to(device), x_val.to(device)
        train_data, prepare, score_fn = _training_data(self, x_train, x_val)
        with intra_op_threads(settings.threads):
            initial_score, error = (None, 0.0)
            if baseline:
                initial_score, error = _untrained_score(self.trainer, score_fn)
            # Differences below two standard errors of the validation score are noise.
            noise = DIVERGENCE_NOISE_STANDARD_ERRORS * error
            result = self._guard(
                lambda: self.trainer.fit(
                    train_data, prepare=prepare, score_fn=score_fn, initial_score=initial_score
                )
            )
        flow = self._frozen(result.flow)
        log_normalizer = self._log_normalizer(flow)
        _warn_about_training(result, settings.max_iter)
        with torch.no_grad():
            y_train = self.chain.forward(x_train)[0]
        findings = diagnose(
            result,
            initial_score=initial_score,
            flow=flow,
            y_train=y_train,
            generator=torch.Generator(device=device).manual_seed(settings.seed + 2),
            tolerance=noise,
        )
        warn_divergence(findings, self._advice())
        return self._outcome(flow, log_normalizer, result, findings)

    def epoch(self, x: Tensor) -> TrainingOutcome:
        """Train one epoch on the chunk ``x`` (``partial_fit``); no validation, no checks."""
        settings = self.settings
        x = x.to(settings.device)
        self.chain.check(x, training=True)
        train_data, prepare, _ = _training_data(self, x, x[:0])
        trainer = self.trainer
        with intra_op_threads(settings.threads):
            loss = self._guard(lambda: trainer.epoch(train_data, prepare=prepare))
        if trainer.scheduler is not None:
            trainer.scheduler.step(-loss)
        flow = self._frozen(copy.deepcopy(trainer.kept))
        history = TrainResult(
            flow=flow,
            loss_curve=trainer.loss_curve,
            n_iter=trainer.n_iter,
            n_skipped_steps=trainer.n_skipped_steps,
            final_learning_rate=float(trainer.optimizer.param_groups[0]["lr"]),
        )
        return self._outcome(flow, self._log_normalizer(flow), history, [])

    # --------------------------------------------------------------- internals
    def _advice(self) -> str:
        """Return the remedies this run's configuration cites (its batch and learning rate)."""
        return self.settings.advice(self.trainer.config.batch_size)

    def _guard(self, train: Callable[[], object]) -> object:
        """Run ``train``, giving a ``FloatingPointError`` this configuration's remedies.

        A :class:`~skebflow.exceptions.TrainingDivergedError` carries generic ones.
        """
        try:
            return train()
        except TrainingDivergedError as exc:
            raise FloatingPointError(f"{exc.seen} {self._advice()}") from exc

    def _frozen(self, flow: EnergyFlow) -> EnergyFlow:
        """Return the kept flow without the preprocessing layer: float64, frozen, eval mode."""
        if not self.settings.match_after_preprocessing:
            flow = without_preprocessing(flow)
        return flow.to(torch.float64).requires_grad_(False).eval()

    def _log_normalizer(self, flow: EnergyFlow) -> float:
        """``log Z`` of the kept flow; a ``FloatingPointError`` if it is not finite."""
        with torch.no_grad():
            log_normalizer = float(flow.log_normalizer())
        if not math.isfinite(log_normalizer):
            raise FloatingPointError(
                "The trained flow has a singular linear layer (log-normalizer "
                f"{log_normalizer}). {self._advice()}"
            )
        return log_normalizer

    def _outcome(
        self, flow: EnergyFlow, log_normalizer: float, result: TrainResult, findings: list[str]
    ) -> TrainingOutcome:
        config = self.trainer.config
        return TrainingOutcome(
            settings=self.settings,
            flow=flow,
            chain=self.chain,
            log_normalizer=log_normalizer,
            jitter=self.jitter,
            batch_size=config.batch_size,
            ema_decay=config.ema_decay,
            learning_rate=config.learning_rate,
            n_iter=result.n_iter,
            loss_curve=list(result.loss_curve),
            validation_scores=list(result.validation_scores),
            n_skipped_steps=result.n_skipped_steps,
            best_iteration=result.best_epoch,
            final_learning_rate=result.final_learning_rate,
            divergence=list(findings),
            interrupted=result.interrupted,
        )


def run_fit(
    settings: FitSettings,
    X: np.ndarray,
    *,
    warm_from: tuple[EnergyFlow, Chain, float] | None = None,
    kept: TrainingRun | None = None,
) -> tuple[TrainingRun, TrainingOutcome]:
    """Fit: split off the validation rows, start (or continue) a run, train it.

    ``warm_from`` is ``(flow, chain, jitter)`` of the fitted estimator for a warm start
    (``kept``: the run of the previous warm fit, continued when it matches); ``None``
    starts over. Returns the run (to keep for the next warm start) and its outcome.
    """
    x_all = as_tensor(X, dtype=torch.float64)
    cpu_generator = torch.Generator().manual_seed(settings.seed)
    fraction = settings.validation_fraction if settings.early_stopping else None
    x_train, x_val, validation_index = validation_split(
        x_all, fraction, cpu_generator, max_rows=MAX_VALIDATION_ROWS
    )
    if warm_from is None:
        run = TrainingRun.start(settings, x_all, x_train, cpu_generator=cpu_generator)
    else:
        flow, chain, jitter = warm_from
        run = TrainingRun.warm(
            settings, x_all, x_train, flow=flow, chain=chain, jitter=jitter, kept=kept
        )
    outcome = run.fit(x_train, x_val, baseline=warm_from is None)
    held_out = validation_index if len(validation_index) else None
    return run, dataclasses.replace(outcome, validation_index=held_out)


def run_partial_fit(
    settings: FitSettings,
    X: np.ndarray,
    *,
    run: TrainingRun | None,
    sample_chain: Chain | None = None,
    warm_from: tuple[EnergyFlow, Chain, float] | None = None,
) -> tuple[TrainingRun, TrainingOutcome]:
    """One ``partial_fit`` call: the first chunk starts a run, later chunks continue it.

    A new run fits its preprocessing to the first chunk, or copies ``sample_chain``
    (``fit_preprocessing``'s), or continues a model that ``fit`` trained: ``warm_from`` is
    its ``(flow, chain, jitter)``, trained on with a new optimizer. Returns the run and
    the outcome of one epoch on ``X``.
    """
    x = as_tensor(X, dtype=torch.float64)
    if run is None and warm_from is not None:
        flow, chain, jitter = warm_from
        settings = dataclasses.replace(settings, whiten=flow.whitened)
        chain = copy.deepcopy(chain).to(device=settings.device, dtype=torch.float64)
        flow = copy.deepcopy(flow).requires_grad_(True)
        run = TrainingRun(settings, chain, flow, jitter, len(x), incremental=True)
    if run is None:
        cpu_generator = torch.Generator().manual_seed(settings.seed)
        run = TrainingRun.start(
            settings, x, x, cpu_generator=cpu_generator, chain=sample_chain, incremental=True
        )
    return run, run.epoch(x)


def validation_split(
    x: Tensor, fraction: float | None, generator: torch.Generator, max_rows: int | None = None
) -> tuple[Tensor, Tensor, np.ndarray]:
    """Return ``(x_train, x_val, index)``: a random ``fraction`` of the rows held out.

    At most ``max_rows`` rows are held out (the rest train).

    ``index`` holds the positions of the held-out rows in ``x``.

    ``fraction=None`` holds out nothing. So does a split that would leave fewer than 2
    rows on either side, with a ``UserWarning`` (early stopping then watches the training
    loss).

    Examples
    --------
    >>> x = torch.arange(20.0).reshape(10, 2)
    >>> x_train, x_val, index = validation_split(x, 0.2, torch.Generator().manual_seed(0))
    >>> x_train.shape, x_val.shape, bool(torch.equal(x[index], x_val))
    (torch.Size([8, 2]), torch.Size([2, 2]), True)
    """
    n = x.shape[0]
    n_val = math.floor(fraction * n) if fraction is not None else 0
    if max_rows is not None:
        n_val = min(n_val, max_rows)
    if n_val < 2 or n - n_val < 2:
        if fraction is not None:
            if n_val >= 2:  # the fraction leaves too few rows to train on
                why = (
                    f"validation_fraction={fraction} of {n} samples leaves {n - n_val} row(s) "
                    "to train on (at least 2 each side); lower validation_fraction"
                )
            else:
                why = (
                    f"{n} samples are too few for a validation split of "
                    f"validation_fraction={fraction} ({n_val} held-out row(s); at least 2 "
                    "each side)"
                )
            warnings.warn(
                f"{why}: training without early stopping on held-out data; the stopping "
                "rule watches the training loss and the last epoch is kept.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        n_val = 0
    order = torch.randperm(n, generator=generator)
    return x[order[n_val:]], x[order[:n_val]], order[:n_val].numpy()


def _training_data(
    run: TrainingRun, x_train: Tensor, x_val: Tensor
) -> tuple[Tensor, PrepareFn | None, ValidationScore | None]:
    """Return what the trainer gets: training data, ``prepare`` and the validation score.

    With Match after Preprocessing the objective sees the preprocessed data; without it
    the preprocessing is the flow's first layer (``skebflow.preprocessing``'s
    ``with_preprocessing``) and only the dequantization noise stays outside. With
    ``dequantize`` every minibatch gets fresh noise (``prepare``); otherwise the data are
    mapped once. A positive jitter adds fresh Gaussian noise of that standard deviation
    to every minibatch, in the units the objective sees. The score is the validation
    log-likelihood in the units of ``x`` (``None`` without validation rows).
    """
    settings, chain, jitter = run.settings, run.chain, run.jitter
    dtype = settings.dtype
    inner = chain if settings.match_after_preprocessing else Chain()
    prepare = None
    if settings.dequantize:
        train_data = x_train

        def prepare(batch: Tensor, gen: torch.Generator) -> Tensor:
            return _jittered(inner.forward(chain.augment(batch, gen))[0].to(dtype), jitter, gen)

    else:
        with torch.no_grad():
            train_data = inner.forward(x_train)[0].to(dtype)
        if jitter > 0:

            def prepare(batch: Tensor, gen: torch.Generator) -> Tensor:
                return _jittered(batch, jitter, gen)

    if not len(x_val):
        return train_data, prepare, None
    with torch.no_grad():
        y_val64, ladj_val = inner.forward(x_val)
    return train_data, prepare, ValidationScore(y_val64, ladj_val, dtype)


class ValidationScore:
    """The validation log-likelihood of a flow (mean over the rows) and its noise.

    ``y_val`` are the validation rows in the units the flow models and ``ladj`` the
    log-Jacobian of the map to them (so that the score is in the units of ``X``);
    ``dtype`` the training precision the flow computes in.
    """

    def __init__(self, y_val: Tensor, ladj: Tensor, dtype: torch.dtype) -> None:
        self.y_val64, self.y_val = y_val, y_val.to(dtype)
        self.ladj, self.dtype = ladj.to(torch.float64), dtype

    def rows(self, model: EnergyFlow) -> Tensor:
        """Return each validation row's log-likelihood (float64)."""
        with torch.no_grad():
            values = model.log_prob(self.y_val).to(torch.float64)
            bad = ~torch.isfinite(values)
            if bool(bad.any()) and self.dtype != torch.float64:
                # A row far from the data can overflow the training precision (float32's
                # range ends at 3e38); score those rows again in float64.
                model64 = copy.deepcopy(model).to(torch.float64)
                values[bad] = model64.log_prob(self.y_val64[bad])
        return values + self.ladj

    def __call__(self, model: EnergyFlow) -> float:
        """Return the mean validation log-likelihood (larger is better)."""
        return float(self.rows(model).mean())

    def with_standard_error(self, model: EnergyFlow) -> tuple[float, float]:
        """Return :meth:`__call__` and its standard error (the rows' spread over ``sqrt(n)``)."""
        values = self.rows(model)
        finite = len(values) > 1 and bool(torch.isfinite(values).all())
        error = float(values.std() / math.sqrt(len(values))) if finite else 0.0
        return float(values.mean()), error


def _jittered(batch: Tensor, jitter: float, generator: torch.Generator) -> Tensor:
    if jitter <= 0:
        return batch
    noise = torch.randn(batch.shape, generator=generator, dtype=batch.dtype, device=batch.device)
    return batch + jitter * noise


def _degenerate_jitter(chain: Chain, x_train: Tensor, settings: FitSettings) -> float:
    """Return the jitter for ``x_train`` in ``chain``'s units: 0, or a warned-of floor.

    Degenerate data (constant or collinear columns, too few rows) and data with point
    masses (discrete columns, repeated values, duplicate rows) get the jitter, each with
    its own warning.
    """
    with torch.no_grad():
        degeneracy = find_degeneracy(chain.forward(x_train.to(settings.device))[0])
    point_masses = find_point_masses(x_train)
    if degeneracy:
        warnings.warn(
            degeneracy.message(DEGENERATE_JITTER),
            DataDimensionalityWarning,
            stacklevel=user_stacklevel(),
        )
    if point_masses:
        warnings.warn(
            point_masses.message(DEGENERATE_JITTER),
            PointMassWarning,
            stacklevel=user_stacklevel(),
        )
    return DEGENERATE_JITTER if degeneracy or point_masses else 0.0


def _check_training_memory(settings: FitSettings) -> None:
    """Refuse, before allocating, a flow whose training cannot fit in the device's memory.

    The flow is built on PyTorch's ``meta`` device (nothing allocated) and its weights
    counted; training holds about five copies of them (weights, gradients, Adam's two
    moments, the EMA). 200,000 columns on the FC flow would have tried to allocate 160 GB.
    """
    with torch.device("meta"):
        skeleton = settings.build_flow(torch.Generator().manual_seed(0))
    n_weights = sum(t.numel() for t in skeleton.state_dict().values())
    size = torch.empty((), dtype=settings.dtype).element_size()
    needed = TRAINING_COPIES * n_weights * size
    available = _device_memory(settings.device)
    if available is not None and needed > available:
        raise ValueError(
            f"architecture={settings.architecture!r} on {settings.n_features} features has "
            f"{n_weights:,} weights: training them needs about {needed / 2**30:,.1f} GiB "
            f"(weights, gradients, Adam's moments and the EMA), more than the "
            f"{available / 2**30:,.1f} GiB of {settings.device}. Reduce the number of "
            "features first (e.g. with sklearn.decomposition.PCA in a pipeline), or choose "
            "a smaller architecture, n_blocks or hidden_features."
        )


def _device_memory(device: torch.device) -> int | None:
    """Return the device's total memory in bytes (None when it cannot be told)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _warn_about_gross_outliers(x: Tensor) -> None:
    """Warn, naming the rows, when training values lie far beyond their column's spread."""
    found = find_gross_outliers(x)
    if found:
        warnings.warn(found.message(), GrossOutlierWarning, stacklevel=user_stacklevel())


def _fit_whitening(
    flow: EnergyFlow, chain: Chain, x_train: Tensor, jitter: float, settings: FitSettings
) -> None:
    """Fit the flow's leading :class:`~skebflow.nn.Whitening` to the training rows.

    In the units the objective sees: after the preprocessing (with one draw of the
    dequantization noise when ``dequantize``), the jitter's variance added, with the
    covariance of :func:`whitening_covariance`. Fitted in float64 before the flow is cast
    to the training dtype.
    """
    generator = torch.Generator(device=settings.device).manual_seed(settings.seed + 3)
    x = x_train.to(settings.device)
    with torch.no_grad():
        if settings.dequantize:
            x = chain.augment(x, generator)
        y = chain.forward(x)[0]
    flow.layers[0].to(device=settings.device, dtype=torch.float64).fit(
        y, min_variance=WHITENING_MIN_VARIANCE, noise=jitter, covariance=whitening_covariance(y)
    )


def whitening_covariance(y: Tensor) -> Tensor:
    """Return the covariance that the whitening of ``y``'s rows is fitted to (float64).

    The sample covariance, unless the rows are no more than the features: then it is
    singular (rank below the number of rows), and a whitening fitted to it would scale
    every unseen direction to the floor and give held-out rows there a vanishing density.
    There the Ledoit-Wolf covariance (:class:`sklearn.covariance.LedoitWolf`, shrunk toward
    a multiple of the identity) keeps every direction at the data's scale. With more rows
    the sample covariance is kept: shrinkage would also damp the thin directions that the
    whitening is there to scale up.

    References
    ----------
    .. [1] O. Ledoit, M. Wolf, "A well-conditioned estimator for large-dimensional
       covariance matrices", Journal of Multivariate Analysis 88 (2004).
    """
    if y.shape[0] > y.shape[1]:
        return torch.cov(y.to(torch.float64).T).reshape(y.shape[1], y.shape[1])
    estimate = LedoitWolf().fit(y.detach().cpu().numpy().astype(np.float64))
    return torch.as_tensor(estimate.covariance_, dtype=torch.float64, device=y.device)


def _untrained_score(
    trainer: Trainer, score_fn: ValidationScore | None
) -> tuple[float | None, float]:
    """Return the untrained flow's validation score and its standard error, in one pass.

    Scored as the trainer scores, in eval mode: in training mode an ActNorm would
    initialize itself on the validation rows after the log-normalizer was taken, a wrong
    baseline and a leak. ``(None, 0.0)`` without validation rows.
    """
    if score_fn is None:
        return None, 0.0
    trainer.kept.eval()
    score, error = score_fn.with_standard_error(trainer.kept)
    trainer.kept.train()
    return score, error


def _warn_about_training(result: TrainResult, max_iter: int) -> None:
    """Warn about skipped (non-finite) steps and about a run that hit ``max_iter``."""
    if result.n_skipped_steps:
        warnings.warn(
            f"{result.n_skipped_steps} of {result.n_steps + result.n_skipped_steps} "
            "training steps had a non-finite loss or gradient and were skipped.",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
    if not result.converged and not result.interrupted and result.n_iter == max_iter:
        warnings.warn(
            f"EBFlowDensity stopped after max_iter={max_iter} epochs without "
            "converging; consider increasing max_iter.",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )


def _thresholds(regularizers: list) -> list[float | None]:
    """Return the barriers' thresholds among ``regularizers`` (did they change?)."""
    return [getattr(r, "threshold", None) for r in regularizers]
