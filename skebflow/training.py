"""The optimization loop: minibatches, EMA, clipping, early stopping, history, progress.

:func:`train` is torch-only and knows nothing of scikit-learn; the estimator binds an
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
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from skebflow.flow import EnergyFlow

__all__ = ["EMA", "TrainConfig", "TrainResult", "make_optimizer", "train", "train_step"]

LossFn = Callable[[EnergyFlow, Tensor, torch.Generator], Tensor]
PrepareFn = Callable[[Tensor, torch.Generator], Tensor]
ScoreFn = Callable[[EnergyFlow], float]

_REMEDIES = (
    "Try a lower learning_rate, a smaller max_grad_norm, objective='dsm' with a larger "
    "noise_scale, or preprocessing='standardize'."
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train` (the estimator's names and meanings).

    Attributes
    ----------
    learning_rate : float
        Adam step size.
    batch_size : int
        Minibatch size (clipped to the number of training samples).
    max_iter : int
        Maximum number of epochs.
    n_iter_no_change : int
        Epochs without an improvement larger than ``tol`` before stopping.
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
    verbose : int
        0 silent, 1 a progress bar, 2 a line per epoch.
    """

    learning_rate: float = 1e-3
    batch_size: int = 128
    max_iter: int = 100
    n_iter_no_change: int = 10
    tol: float = 1e-4
    ema_decay: float | None = 0.999
    max_grad_norm: float | None = None
    max_consecutive_skips: int = 20
    lr_patience: int | None = None
    lr_factor: float = 0.5
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


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied).

    Parameters
    ----------
    module : torch.nn.Module
        The module being trained.
    decay : float
        Target decay; the effective decay at update ``n >= 1`` is
        ``min(decay, (1 + n) / (10 + n))``; the first update copies the weights.

    Examples
    --------
    >>> net = torch.nn.Linear(2, 2)
    >>> ema = EMA(net, decay=0.9)
    >>> ema.update()
    >>> isinstance(ema.module, torch.nn.Linear)
    True
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.source = module
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.decay = float(decay)
        self.n_updates = 0
        self._source_params = list(module.parameters())
        self._params = list(self.module.parameters())

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (one fused call)."""
        # The first update copies the weights (the average starts where training does).
        n = self.n_updates
        decay = 0.0 if n == 0 else min(self.decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(self._params, self._source_params, 1.0 - decay)
        for own, theirs in zip(self.module.buffers(), self.source.buffers(), strict=True):
            own.copy_(theirs)
        self.n_updates += 1


def make_optimizer(parameters: list[Tensor], learning_rate: float) -> torch.optim.Adam:
    """Return Adam, fused into one kernel per step where torch supports it (CPU, CUDA).

    The fused update is about five times faster than the per-parameter one for large
    dense layers (3072 × 3072 on this project's CPU: 28 ms against 143 ms per step).

    Parameters
    ----------
    parameters : list of Tensor
        The parameters to optimize.
    learning_rate : float
        Step size.

    Returns
    -------
    torch.optim.Adam
        The optimizer.

    Examples
    --------
    >>> make_optimizer([torch.nn.Parameter(torch.zeros(2))], 1e-3).defaults["fused"]
    True
    """
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return torch.optim.Adam(parameters, lr=learning_rate, fused=fused or None)


def _grad_norm(parameters: list[Tensor]) -> Tensor:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _like_parameter(grad: Tensor | None, param: Tensor) -> Tensor | None:
    """Return ``grad`` with the memory layout (strides) of ``param``.

    Fused optimizers (``Adam(fused=True)`` on CPU and CUDA) walk a parameter and its
    gradient as flat buffers, so a gradient whose strides differ from its parameter's
    (say, a row-major gradient of a transposed weight) is applied transposed, silently.
    ``AccumulateGrad`` (``loss.backward()``) gives gradients their parameter's layout;
    so does this helper for gradients from :func:`torch.autograd.grad`, which can also
    be expanded views of a broadcast.
    """
    if grad is None or grad.stride() == param.stride():
        return grad
    laid_out = torch.empty_like(param, memory_format=torch.preserve_format)
    return laid_out.copy_(grad)


def train_step(
    flow: EnergyFlow,
    loss_fn: LossFn,
    y: Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    parameters: list[Tensor],
    generator: torch.Generator,
    ema: EMA | None = None,
    max_grad_norm: float | None = None,
) -> Tensor | None:
    """Run one optimizer step: loss, backward, finiteness check, clipping, step, EMA.

    Parameters
    ----------
    flow : EnergyFlow
        The model being trained.
    loss_fn : callable
        ``loss_fn(flow, y, generator) -> scalar Tensor``.
    y : Tensor of shape (n, D)
        The (prepared) minibatch.
    optimizer : torch.optim.Optimizer
        Optimizer over ``parameters``.
    parameters : list of Tensor
        The trained parameters (all of them require gradients).
    generator : torch.Generator
        Source of the objective's noise.
    ema : EMA, optional
        Averaged copy to update after the step.
    max_grad_norm : float, optional
        Clip the global gradient norm to this value.

    Returns
    -------
    Tensor or None
        The detached loss, or ``None`` when the loss or a gradient was not finite (then
        no parameter moved).

    Examples
    --------
    >>> from skebflow.architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> params = list(flow.parameters())
    >>> loss = train_step(flow, lambda f, y, g: f.energy(y).mean(), torch.ones(4, 2).double(),
    ...                   optimizer=make_optimizer(params, 1e-3), parameters=params,
    ...                   generator=torch.Generator())
    >>> bool(torch.isfinite(loss))
    True
    """
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(flow, y, generator)
    if not torch.isfinite(loss):
        return None
    # Differentiate with respect to the parameters only: score objectives make their input
    # a leaf that requires grad, and ``loss.backward()`` would also compute (and throw
    # away) the gradient with respect to that input, one more D x D product per layer.
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    for param, grad in zip(parameters, grads, strict=True):
        param.grad = _like_parameter(grad, param)
    norm = _grad_norm(parameters)
    if not torch.isfinite(norm):
        return None
    if max_grad_norm is not None:
        scale = min(1.0, max_grad_norm / (float(norm) + 1e-12))
        if scale < 1.0:
            torch._foreach_mul_([p.grad for p in parameters if p.grad is not None], scale)
    optimizer.step()
    if ema is not None:
        ema.update()
    return loss.detach()


def train(
    flow: EnergyFlow,
    loss_fn: LossFn,
    x_train: Tensor,
    *,
    config: TrainConfig,
    generator: torch.Generator,
    prepare: PrepareFn | None = None,
    score_fn: ScoreFn | None = None,
) -> TrainResult:
    """Train ``flow`` by minimizing ``loss_fn`` over minibatches of ``x_train``.

    Parameters
    ----------
    flow : EnergyFlow
        The model, modified in place (the raw weights).
    loss_fn : callable
        ``loss_fn(flow, y_batch, generator) -> scalar Tensor``.
    x_train : Tensor of shape (n, D)
        Training data on the flow's device and dtype.
    config : TrainConfig
        Hyperparameters.
    generator : torch.Generator
        The only source of randomness (shuffling, objective noise, augmentation); it
        must live on the flow's device.
    prepare : callable, optional
        ``prepare(x_batch, generator) -> y_batch``, e.g. dequantization noise followed by
        the preprocessing map; identity when omitted.
    score_fn : callable, optional
        ``score_fn(model) -> float``, larger is better (a held-out log-likelihood). When
        given, it is evaluated on the kept model (EMA weights) after every epoch, drives
        early stopping, and the best epoch's weights are restored. Otherwise the stopping
        rule watches the training loss.

    Returns
    -------
    TrainResult
        The kept model and the history.

    Raises
    ------
    FloatingPointError
        When ``config.max_consecutive_skips`` steps in a row have a non-finite loss or
        gradient, or the monitored score becomes non-finite.

    Examples
    --------
    >>> from skebflow.architectures import build_fc
    >>> flow = build_fc(2).double()
    >>> x = torch.randn(64, 2, dtype=torch.float64)
    >>> loss = lambda f, y, g: f.energy(y).mean() + f.log_normalizer()
    >>> result = train(flow, loss, x, config=TrainConfig(max_iter=3),
    ...                generator=torch.Generator().manual_seed(0))
    >>> result.n_iter
    3
    """
    n = x_train.shape[0]
    batch_size = max(1, min(config.batch_size, n))
    parameters = [p for p in flow.parameters() if p.requires_grad]
    optimizer = make_optimizer(parameters, config.learning_rate)
    scheduler = None
    if config.lr_patience is not None:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=config.lr_factor,
            patience=config.lr_patience,
            threshold=config.tol,
            threshold_mode="abs",
        )
    ema = EMA(flow, config.ema_decay) if config.ema_decay else None
    kept = ema.module if ema is not None else flow
    result = TrainResult(flow=kept)
    best_value, best_state, stall, consecutive_skips = -math.inf, None, 0, 0
    progress = tqdm(total=config.max_iter, disable=config.verbose != 1, leave=False)
    flow.train()
    try:
        for epoch in range(1, config.max_iter + 1):
            start = time.perf_counter()
            order = torch.randperm(n, generator=generator, device=generator.device)
            epoch_loss, epoch_steps = torch.zeros((), dtype=x_train.dtype), 0
            for begin in range(0, n, batch_size):
                batch = x_train[order[begin : begin + batch_size].to(x_train.device)]
                y = prepare(batch, generator) if prepare is not None else batch
                loss = train_step(
                    flow,
                    loss_fn,
                    y,
                    optimizer=optimizer,
                    parameters=parameters,
                    generator=generator,
                    ema=ema,
                    max_grad_norm=config.max_grad_norm,
                )
                if loss is None:
                    result.n_skipped_steps += 1
                    consecutive_skips += 1
                    if consecutive_skips >= config.max_consecutive_skips:
                        raise FloatingPointError(
                            f"Training diverged: {consecutive_skips} consecutive steps had a "
                            f"non-finite loss or gradient (epoch {epoch}). {_REMEDIES}"
                        )
                    continue
                consecutive_skips = 0
                result.n_steps += 1
                epoch_loss = epoch_loss + loss.cpu()
                epoch_steps += 1
            result.n_iter = epoch
            mean_loss = float(epoch_loss) / epoch_steps if epoch_steps else math.nan
            result.loss_curve.append(mean_loss)
            if score_fn is not None:
                kept.eval()
                value = float(score_fn(kept))
                kept.train()
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"The validation log-likelihood became {value} at epoch {epoch}. "
                        + _REMEDIES
                    )
                result.validation_scores.append(value)
            else:
                value = -mean_loss
            # The stall count needs an improvement larger than tol; the kept snapshot is
            # the best epoch itself (as in scikit-learn's MLP early stopping).
            stall = 0 if value > best_value + config.tol else stall + 1
            if scheduler is not None:
                scheduler.step(value)
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
            if stall >= config.n_iter_no_change:
                result.converged = True
                break
    except KeyboardInterrupt:
        result.interrupted = True
        warnings.warn(
            f"Training interrupted at epoch {result.n_iter + 1}; keeping the best model so far.",
            UserWarning,
            stacklevel=2,
        )
    finally:
        progress.close()
    result.final_learning_rate = float(optimizer.param_groups[0]["lr"])
    if best_state is not None:
        kept.load_state_dict(best_state)
    kept.eval()
    return result
