"""The optimization loop: minibatches, EMA, clipping, early stopping, history, progress.

:class:`Trainer` owns the model, optimizer, schedule, EMA, generator and history, so that
training can stop and continue; :func:`train` is one :meth:`Trainer.fit` of a new
trainer. Both are torch-only and know nothing of scikit-learn: the estimator binds an
objective and a preprocessing step and hands them in as plain callables.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267 (EMA of the weights, best-validation
   checkpoint).
.. [2] D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from skebflow.exceptions import TrainingDivergedError
from skebflow.nn import EnergyFlow
from skebflow.training._config import (
    LossFn,
    PrepareFn,
    Regularizer,
    ScoreFn,
    TrainConfig,
    TrainResult,
)
from skebflow.training._ema import EMA
from skebflow.training._step import make_optimizer, train_step
from skebflow.training._stopping import rising_trend

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "make_optimizer",
    "train",
    "train_step",
]


class Trainer:
    """Train a flow and keep every piece of training state between calls.

    The trainer owns the model, the optimizer (Adam), the learning-rate schedule, the
    EMA of the weights, the random generator and the history, so that training can stop
    and continue exactly where it was: :meth:`fit` twice runs like one longer
    :meth:`fit` with the same optimizer moments, schedule and average, and
    :meth:`step` / :meth:`epoch` are the pieces :meth:`fit` is made of.

    Parameters
    ----------
    model : EnergyFlow
        The model, trained in place (its raw weights).
    loss_fn : callable
        ``loss_fn(model, y_batch, generator) -> scalar Tensor``. May be replaced between
        calls (say, a maximum-likelihood polish after score matching).
    config : TrainConfig
        Hyperparameters; :attr:`config` may be replaced between calls (the optimizer
        takes the new ``learning_rate`` only when it differs from the previous
        config's).
    generator : torch.Generator
        The only source of randomness (shuffling, objective noise, augmentation); it
        must live on the model's device.
    regularizers : sequence of callable, optional
        ``regularizer(model) -> scalar Tensor`` terms added to every step's loss; they
        may keep state (the singular-value barrier), which the trainer owns with the
        rest. :attr:`regularizers` may be replaced between calls.

    Attributes
    ----------
    optimizer : torch.optim.Adam
        Over the parameters that require gradients.
    scheduler : ReduceLROnPlateau or None
        The plateau schedule (``config.lr_patience``), or ``None``.
    ema : EMA or None
        The average of the weights (``config.ema_decay``), or ``None``.
    loss_curve, validation_scores : list of float
        History over every epoch this trainer ran.
    n_iter, n_steps, n_skipped_steps : int
        Epochs, optimizer steps and skipped (non-finite) steps so far.

    Examples
    --------
    >>> from skebflow.nn._architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> x = torch.randn(64, 2, dtype=torch.float64)
    >>> loss = lambda f, y, g: f.energy(y).mean() + f.log_normalizer()
    >>> trainer = Trainer(flow, loss, TrainConfig(max_iter=2), generator=torch.Generator())
    >>> first, second = trainer.fit(x), trainer.fit(x)
    >>> (first.n_iter, second.n_iter, trainer.n_iter, trainer.ema.n_updates)
    (2, 2, 4, 4)
    """

    def __init__(
        self,
        model: EnergyFlow,
        loss_fn: LossFn,
        config: TrainConfig,
        *,
        generator: torch.Generator,
        regularizers: Sequence[Regularizer] = (),
    ) -> None:
        self.model, self.loss_fn, self.config, self.generator = model, loss_fn, config, generator
        self.regularizers = list(regularizers)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.parameters, config.learning_rate)
        self.scheduler = None
        if config.lr_patience is not None:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode="max",
                factor=config.lr_factor,
                patience=config.lr_patience,
                threshold=config.tol,
                threshold_mode="abs",
            )
        self.ema = EMA(model, config.ema_decay) if config.ema_decay else None
        self.loss_curve: list[float] = []
        self.validation_scores: list[float] = []
        self.n_iter = self.n_steps = self.n_skipped_steps = 0
        self._consecutive_skips = 0
        self._learning_rate = config.learning_rate

    @property
    def kept(self) -> EnergyFlow:
        """The model that is evaluated and kept: the EMA weights, or the raw weights."""
        return self.ema.module if self.ema is not None else self.model

    def _sync_config(self) -> None:
        """Apply a changed ``config.learning_rate`` to the optimizer."""
        if self.config.learning_rate != self._learning_rate:
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.learning_rate
            self._learning_rate = self.config.learning_rate

    def step(self, y: Tensor) -> Tensor | None:
        """Take one optimizer step on the prepared batch ``y`` (see :func:`train_step`).

        Returns the detached loss, or ``None`` for a skipped (non-finite) step; raises
        :class:`FloatingPointError` after ``config.max_consecutive_skips`` skips in a row.
        """
        loss = train_step(
            self.model,
            self.loss_fn,
            y,
            optimizer=self.optimizer,
            parameters=self.parameters,
            generator=self.generator,
            ema=self.ema,
            max_grad_norm=self.config.max_grad_norm,
            regularizers=self.regularizers,
        )
        if loss is None:
            self.n_skipped_steps += 1
            self._consecutive_skips += 1
            if self._consecutive_skips >= self.config.max_consecutive_skips:
                raise TrainingDivergedError(
                    f"Training diverged: {self._consecutive_skips} consecutive steps had a "
                    f"non-finite loss or gradient (epoch {self.n_iter + 1})."
                )
            return None
        self._consecutive_skips = 0
        self.n_steps += 1
        return loss

    def epoch(self, data: Tensor, *, prepare: PrepareFn | None = None) -> float:
        """Run one pass over ``data`` in shuffled minibatches; return the mean loss.

        With ``config.max_epoch_rows`` below the number of rows, the epoch is a random
        subset of that many rows (drawn anew each epoch). ``prepare(x_batch, generator)
        -> y_batch`` maps each minibatch first (identity when omitted). The epoch is
        appended to :attr:`loss_curve` and :attr:`n_iter`.
        """
        self._sync_config()
        n = data.shape[0]
        batch_size = max(1, min(self.config.batch_size, n))
        order = torch.randperm(n, generator=self.generator, device=self.generator.device)
        if self.config.max_epoch_rows is not None:
            order = order[: self.config.max_epoch_rows]
        total, steps = torch.zeros((), dtype=data.dtype), 0
        self.model.train()
        for begin in range(0, len(order), batch_size):
            batch = data[order[begin : begin + batch_size].to(data.device)]
            loss = self.step(prepare(batch, self.generator) if prepare is not None else batch)
            if loss is not None:
                total, steps = total + loss.cpu(), steps + 1
        self.n_iter += 1
        mean_loss = float(total) / steps if steps else math.nan
        self.loss_curve.append(mean_loss)
        return mean_loss

    def fit(
        self,
        data: Tensor,
        *,
        prepare: PrepareFn | None = None,
        score_fn: ScoreFn | None = None,
        initial_score: float | None = None,
    ) -> TrainResult:
        """Run epochs until the stopping rule fires or ``config.max_iter`` epochs ran.

        Parameters
        ----------
        data : Tensor of shape (n, D)
            Training data on the model's device and dtype.
        prepare : callable, optional
            ``prepare(x_batch, generator) -> y_batch``, e.g. dequantization noise followed
            by the preprocessing map; identity when omitted.
        score_fn : callable, optional
            ``score_fn(model) -> float``, larger is better (a held-out log-likelihood).
            When given, it is evaluated on :attr:`kept` after every epoch, drives early
            stopping, and the result holds a copy of the best epoch's weights. Otherwise
            the stopping rule watches the training loss.
        initial_score : float, optional
            ``score_fn`` of :attr:`kept` before the first epoch. When given (with
            ``score_fn``), the model as it was is a candidate too: if no epoch beats it,
            it is what the result holds, with ``best_epoch = 0``.

        Returns
        -------
        TrainResult
            A copy of the model to keep (the trainer's own state is where training
            stopped) and this call's history.

        Raises
        ------
        FloatingPointError
            When ``config.max_consecutive_skips`` steps in a row have a non-finite loss or
            gradient, or the monitored score becomes non-finite.
        """
        config = self.config
        kept = self.kept
        fit_start = time.perf_counter()
        result = TrainResult(flow=kept)
        best_value, best_state, stall = -math.inf, None, 0
        if score_fn is not None and initial_score is not None:
            best_value, best_state = initial_score, copy.deepcopy(kept.state_dict())
            result.best_epoch = 0
        skipped_before, steps_before = self.n_skipped_steps, self.n_steps
        progress = tqdm(total=config.max_iter, disable=config.verbose != 1, leave=False)
        try:
            for epoch in range(1, config.max_iter + 1):
                start = time.perf_counter()
                mean_loss = self.epoch(data, prepare=prepare)
                result.n_iter = epoch
                result.loss_curve.append(mean_loss)
                if score_fn is not None:
                    kept.eval()
                    value = float(score_fn(kept))
                    kept.train()
                    if not math.isfinite(value):
                        raise TrainingDivergedError(
                            f"The validation log-likelihood became {value} at epoch {epoch}."
                        )
                    result.validation_scores.append(value)
                    self.validation_scores.append(value)
                    for regularizer in self.regularizers:
                        hook = getattr(regularizer, "after_validation", None)
                        if hook is not None:  # e.g. the barrier reuses the factorization
                            hook(kept)
                else:
                    value = -mean_loss
                # The stall count needs an improvement larger than tol; the kept snapshot
                # is the best epoch itself (as in scikit-learn's MLP early stopping).
                stall = 0 if value > best_value + config.tol else stall + 1
                if self.scheduler is not None:
                    self.scheduler.step(value)
                if value > best_value:
                    best_value = value
                    if score_fn is not None:
                        result.best_epoch = epoch
                        best_state = copy.deepcopy(kept.state_dict())
                if config.verbose >= 2:
                    extra = f", validation {value:.4f}" if score_fn is not None else ""
                    print(
                        f"epoch {epoch}: loss {mean_loss:.5f}{extra} "
                        f"({time.perf_counter() - start:.2f} s)"
                    )
                progress.update(1)
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                if stall >= config.n_iter_no_change and not rising_trend(
                    result.validation_scores
                    if score_fn is not None
                    else [-loss for loss in result.loss_curve],
                    config.trend_window,
                    config.trend_threshold,
                    min_slope=config.tol / config.n_iter_no_change,
                ):
                    result.converged = True
                    break
        except KeyboardInterrupt:
            result.interrupted = True
            warnings.warn(
                f"Training interrupted at epoch {result.n_iter + 1}; keeping the best model "
                "so far.",
                UserWarning,
                stacklevel=2,
            )
        finally:
            progress.close()
        result.n_steps = self.n_steps - steps_before
        result.n_skipped_steps = self.n_skipped_steps - skipped_before
        result.final_learning_rate = float(self.optimizer.param_groups[0]["lr"])
        result.flow = copy.deepcopy(kept)
        if best_state is not None:
            result.flow.load_state_dict(best_state)
        result.flow.eval()
        if config.verbose >= 1:
            print(summary(result, config, time.perf_counter() - fit_start, best_value))
        return result

    def state_dict(self) -> dict:
        """Return a copy of what continuing needs: weights, optimizer, schedule, EMA, RNG.

        Examples
        --------
        >>> from skebflow.nn._architectures import build_fc
        >>> loss = lambda f, y, g: f.energy(y).mean() + f.log_normalizer()
        >>> make = lambda: Trainer(build_fc(2).double(), loss, TrainConfig(max_iter=1),
        ...                        generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(32, 2, dtype=torch.float64)
        >>> a = make(); _ = a.fit(x)
        >>> b = make(); b.load_state_dict(a.state_dict())
        >>> _ = a.fit(x); _ = b.fit(x)
        >>> all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
        True
        """
        # A snapshot: torch's state dicts hold references to the live tensors (Adam's
        # moments would otherwise keep changing inside a saved state).
        return copy.deepcopy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict(),
                "generator": self.generator.get_state(),
                "loss_curve": list(self.loss_curve),
                "validation_scores": list(self.validation_scores),
                "counts": (self.n_iter, self.n_steps, self.n_skipped_steps),
                "learning_rate": self._learning_rate,
            }
        )

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (into a trainer built the same way)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        self.loss_curve = list(state["loss_curve"])
        self.validation_scores = list(state["validation_scores"])
        self.n_iter, self.n_steps, self.n_skipped_steps = state["counts"]
        self._learning_rate = state["learning_rate"]


def summary(result: TrainResult, config: TrainConfig, seconds: float, best: float) -> str:
    """Return the one line that ends a verbose fit: epochs, why it stopped, the best epoch.

    Examples
    --------
    >>> from skebflow.nn._architectures import build_fc
    >>> result = TrainResult(flow=build_fc(2), n_iter=30, converged=True, best_epoch=18)
    >>> config = TrainConfig(max_iter=200, n_iter_no_change=12, trend_window=24)
    >>> print(summary(result, config, 4.2, -1.25))
    trained 30 of max_iter=200 epochs in 4.2 s; stopped: no improvement for 12 epochs and no rising trend over the last 24; best epoch 18 (validation log-likelihood -1.25)
    """  # noqa: E501
    if result.interrupted:
        why = "interrupted"
    elif result.converged:
        why = f"no improvement for {config.n_iter_no_change} epochs"
        if config.trend_window and result.n_iter >= config.trend_window:
            why += f" and no rising trend over the last {config.trend_window}"
    else:
        why = "reached max_iter (not converged)"
    line = f"trained {result.n_iter} of max_iter={config.max_iter} epochs in {seconds:.1f} s"
    line += f"; stopped: {why}"
    if result.best_epoch:
        line += f"; best epoch {result.best_epoch} (validation log-likelihood {best:.4g})"
    if result.n_skipped_steps:
        line += f"; {result.n_skipped_steps} non-finite steps skipped"
    return line


def train(
    flow: EnergyFlow,
    loss_fn: LossFn,
    x_train: Tensor,
    *,
    config: TrainConfig,
    generator: torch.Generator,
    prepare: PrepareFn | None = None,
    score_fn: ScoreFn | None = None,
    regularizers: Sequence[Regularizer] = (),
) -> TrainResult:
    """Train ``flow`` by minimizing ``loss_fn`` over minibatches of ``x_train``.

    One :meth:`Trainer.fit` of a new :class:`Trainer`; see there for the parameters.

    Returns
    -------
    TrainResult
        The kept model (a copy: the EMA weights, or the raw weights without EMA, of the
        best validation epoch when a validation score was monitored, else of the last
        epoch) and the history.

    Examples
    --------
    >>> from skebflow.nn._architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> x = torch.randn(64, 2, dtype=torch.float64)
    >>> loss = lambda f, y, g: f.energy(y).mean() + f.log_normalizer()
    >>> result = train(flow, loss, x, config=TrainConfig(max_iter=3),
    ...                generator=torch.Generator().manual_seed(0))
    >>> result.n_iter
    3
    """
    trainer = Trainer(flow, loss_fn, config, generator=generator, regularizers=regularizers)
    return trainer.fit(x_train, prepare=prepare, score_fn=score_fn)
