"""What the trainer takes and reports: :class:`TrainConfig`, :class:`TrainResult`.

The callables the trainer is handed are typed here too: ``LossFn``, ``PrepareFn``,
``ScoreFn`` and ``Regularizer``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from skebflow.nn import EnergyFlow

__all__ = ["LossFn", "PrepareFn", "Regularizer", "ScoreFn", "TrainConfig", "TrainResult"]

LossFn = Callable[[EnergyFlow, Tensor, torch.Generator], Tensor]
PrepareFn = Callable[[Tensor, torch.Generator], Tensor]
ScoreFn = Callable[[EnergyFlow], float]
Regularizer = Callable[[EnergyFlow], Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :class:`Trainer` (the estimator's names, meanings and defaults).

    ``EBFlowDensity`` reads its defaults of ``max_iter``, ``n_iter_no_change``, ``tol``,
    ``max_grad_norm`` and the plateau factor from here; its ``"auto"`` settings
    (learning rate, batch size, EMA decay) are resolved from the data and passed in.

    Attributes
    ----------
    learning_rate : float
        Adam step size.
    batch_size : int
        Minibatch size (clipped to the number of training samples).
    max_iter : int
        Maximum number of epochs.
    n_iter_no_change : int
        Epochs without an improvement larger than ``tol`` before stopping (once the
        trend test below finds no rise).
    tol : float
        Minimum improvement of the monitored quantity.
    ema_decay : float or None
        EMA decay of the weights, with warm-up ``min(decay, (1 + n) / (10 + n))``;
        ``None`` or 0 disables the EMA.
    max_grad_norm : float or None
        Clip the global gradient norm to this value; ``None`` disables clipping.
    max_consecutive_skips : int
        Non-finite steps in a row after which training fails.
    lr_patience : int or None
        Reduce-on-plateau schedule: multiply the learning rate by ``lr_factor`` after
        this many epochs without an improvement larger than ``tol`` of the monitored
        quantity (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`); ``None`` keeps
        the learning rate constant.
    lr_factor : float
        Factor of each reduction.
    trend_window : int
        Stop only when the monitored values of the last ``trend_window`` epochs do not
        rise significantly (:func:`skebflow.training._stopping.rising_trend`): a slow
        rise that the noise hides from the best value goes on. 0 turns the test off
        (stop after ``n_iter_no_change`` epochs without improvement).
    trend_threshold : float
        The z score of the trend test above which the values count as rising (only a
        rise of more than ``tol`` per ``n_iter_no_change`` epochs counts).
    max_epoch_rows : int or None
        An epoch trains on at most this many rows, a random subset drawn anew every
        epoch when the data have more; ``None``: every epoch is a whole pass.
    verbose : int
        0 silent, 1 a progress bar, 2 a line per epoch.
    """

    learning_rate: float = 1e-3
    batch_size: int = 128
    max_iter: int = 200
    n_iter_no_change: int = 20
    tol: float = 1e-4
    ema_decay: float | None = 0.999
    max_grad_norm: float | None = 10.0
    max_consecutive_skips: int = 20
    lr_patience: int | None = None
    lr_factor: float = 0.5
    trend_window: int = 0
    trend_threshold: float = 2.0
    max_epoch_rows: int | None = None
    verbose: int = 0


@dataclass
class TrainResult:
    """What :func:`train` reports.

    Attributes
    ----------
    flow : EnergyFlow
        The model to keep: the EMA weights (or the raw weights without EMA) of the best
        validation epoch when a validation score was monitored, else of the last epoch.
    loss_curve : list of float
        Mean training loss per epoch.
    validation_scores : list of float
        Validation score per epoch (empty without ``score_fn``).
    n_iter : int
        Epochs run.
    n_steps : int
        Optimizer steps taken.
    n_skipped_steps : int
        Steps skipped because the loss or a gradient was not finite.
    converged : bool
        Whether the stopping rule fired before ``max_iter``.
    interrupted : bool
        Whether a :class:`KeyboardInterrupt` ended training.
    best_epoch : int or None
        Epoch (1-based) whose weights were kept when validation was monitored.
    final_learning_rate : float or None
        The learning rate at the end (after any reductions of the schedule).
    """

    flow: EnergyFlow
    loss_curve: list[float] = field(default_factory=list)
    validation_scores: list[float] = field(default_factory=list)
    n_iter: int = 0
    n_steps: int = 0
    n_skipped_steps: int = 0
    converged: bool = False
    interrupted: bool = False
    best_epoch: int | None = None
    final_learning_rate: float | None = None
