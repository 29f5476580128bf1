"""One optimizer step: loss and regularizers, backward, checks, clipping, Adam, EMA.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267 (EMA of the weights, best-validation
   checkpoint).
.. [2] D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from skebflow.nn import EnergyFlow
from skebflow.training._config import LossFn, Regularizer
from skebflow.training._ema import EMA

__all__ = ["make_optimizer", "train_step"]


def make_optimizer(parameters: list[Tensor], learning_rate: float) -> torch.optim.Adam:
    """Return Adam, fused into one kernel per step where torch supports it (CPU, CUDA).

    The fused update is several times faster than the per-parameter one for large dense
    layers (measured in ``docs/benchmark_history.md``, §1).

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
    regularizers: Sequence[Regularizer] = (),
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
    regularizers : sequence of callable, optional
        ``regularizer(flow) -> scalar Tensor`` terms added to the loss (the
        singular-value barrier of :func:`skebflow.objectives._registry.make_regularizers`).

    Returns
    -------
    Tensor or None
        The detached loss (regularizers included), or ``None`` when the loss or a
        gradient was not finite (then no parameter moved).

    Examples
    --------
    >>> from skebflow.nn._architectures import build_fc
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
    for regularizer in regularizers:
        loss = loss + regularizer(flow)
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
