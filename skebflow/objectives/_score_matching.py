"""Score-matching objectives for energy-based models: exact, sliced, denoising, finite-difference.

Four losses that fit the model score ``s = -∇_y E`` to the data without ever computing the
log-normalizer (for a flow, the log-determinants of its linear layers) or drawing a model
sample: exact score matching ``sm`` [1]_ (a Hessian trace, limited to :data:`SM_MAX_FEATURES`
features), sliced score matching ``ssm`` [2]_ (random projections of that trace), denoising
score matching ``dsm`` [3]_ (the score of the noise-convolved data) and finite-difference sliced
score matching ``fdssm`` [4]_ (energies only). They are selected by name through
:data:`skebflow.objectives._registry.OBJECTIVES`, which also holds the likelihood objectives.

Each is a pure function ``f(model, y, *, generator=None, **options)`` returning a scalar tensor:
a per-sample loss, averaged over the batch and divided by the number ``D`` of entries of one
sample (the convention of [5]_). The model only needs the ``energy`` of
:class:`skebflow.objectives._likelihood.EnergyModel`. Randomness (slices, noise) comes only from
``generator``; with ``None`` a fresh local generator seeded from the operating system is used,
so the global RNG is never consumed. The generator must live on the device of ``y``. The input
``y`` is never modified. Flows whose layers all have second-order rules take the Taylor-mode
paths of :mod:`skebflow.objectives._jets` instead of double backward.

The score objectives (``sm``, ``ssm``, ``dsm``) differentiate the energy with respect to its
input and return a loss that is differentiable with respect to the parameters whenever gradients
are enabled at call time; under :func:`torch.no_grad` they still work (input gradients are
switched on locally) and return a detached value. They cannot run under
:func:`torch.inference_mode`.

References
----------
.. [1] A. Hyvärinen, "Estimation of non-normalized statistical models by score matching",
   JMLR 6, 2005.
.. [2] Y. Song, S. Garg, J. Shi, S. Ermon, "Sliced score matching: a scalable approach to
   density and score estimation", UAI 2019.
.. [3] P. Vincent, "A connection between score matching and denoising autoencoders",
   Neural Computation 23(7), 2011.
.. [4] T. Pang, K. Xu, C. Li, Y. Song, S. Ermon, J. Zhu, "Efficient learning of generative
   models via finite-difference score matching", NeurIPS 2020.
.. [5] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training energy-based
   normalizing flow with score-matching objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import math
import numbers
from typing import Protocol

import torch
from torch import Tensor

from skebflow.objectives._jets import energy_jet, energy_score_curvature, supports_jet

__all__ = [
    "SM_MAX_FEATURES",
    "dsm",
    "fdssm",
    "sm",
    "ssm",
]

#: Largest number of features for which exact score matching (``sm``) is allowed: its Hessian
#: trace costs one backward pass per feature. Use ``"ssm"`` above it.
SM_MAX_FEATURES = 100

_SLICE_DISTRIBUTIONS = ("rademacher", "gaussian")


class _EnergyFunction(Protocol):
    """What the score objectives use of :class:`~skebflow.objectives._likelihood.EnergyModel`."""

    def energy(self, y: Tensor) -> Tensor:
        """Return the energy of each row of ``y`` (n, D), shape (n,), differentiable."""
        ...


def _check_y(y: Tensor) -> None:
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}.")
    if y.ndim < 2 or y.shape[0] == 0 or y[0].numel() == 0:
        raise ValueError(
            "y must be a tensor (n_samples, *event_shape) with at least one sample and one "
            f"feature, for example (n_samples, n_features); got shape {tuple(y.shape)}."
        )
    if not y.is_floating_point():
        raise ValueError(f"y must have a floating-point dtype, got {y.dtype}.")


def _features(y: Tensor) -> int:
    """``D``: the number of entries of one sample."""
    return y[0].numel()


def _squared_norm(values: Tensor) -> Tensor:
    """Per-sample squared norm over the event dimensions."""
    return values.flatten(1).pow(2).sum(1)


def _check_positive(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite real number > 0, got {value!r}.")


def _generator(generator: torch.Generator | None, y: Tensor) -> torch.Generator:
    if generator is None:
        generator = torch.Generator(device=y.device)
        generator.seed()  # fresh OS entropy, without touching the global RNG
    elif generator.device.type != y.device.type:
        raise ValueError(
            f"generator lives on {generator.device} but y on {y.device}; "
            "pass a generator created on the device of y."
        )
    return generator


def _energy(model: _EnergyFunction, y: Tensor) -> Tensor:
    energy = model.energy(y)
    if energy.shape != (y.shape[0],):
        raise ValueError(
            f"model.energy must return shape ({y.shape[0]},) for input of shape "
            f"{tuple(y.shape)}, got {tuple(energy.shape)}."
        )
    return energy


def _require_autograd() -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError("score objectives need autograd; use torch.no_grad, not inference_mode.")


def _energy_grad(model: _EnergyFunction, y: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
    """Return a fresh leaf copy of ``y`` and ``∇_y E`` at it (the negative model score)."""
    _require_autograd()
    y = y.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_energy(model, y).sum(), y, create_graph=create_graph)
    return y, grad


def sm(model: _EnergyFunction, y: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Exact score matching: ``mean(½‖s‖² + tr ∇_y s) / D`` with ``s = -∇_y E`` [1]_.

    The Hessian trace costs ``D`` extra backward passes (or, for flows with second-order
    rules such as the FC architecture, ``D`` Taylor-mode tangents in one forward pass,
    :func:`skebflow.objectives._jets.energy_jet`), so this is refused above :data:`SM_MAX_FEATURES`
    (100) features: use ``"ssm"`` instead. The energy must be twice
    differentiable. ``generator`` is accepted for a uniform signature and unused.

    Parameters
    ----------
    model : EnergyModel
        The model.
    y : Tensor of shape (n_samples, n_features)
        The batch.
    generator : torch.Generator or None
        Unused.

    Returns
    -------
    Tensor
        Scalar loss.

    Raises
    ------
    ValueError
        If ``n_features > SM_MAX_FEATURES``.

    Examples
    --------
    >>> import types, torch
    >>> model = types.SimpleNamespace(energy=lambda y: 0.5 * (y**2).sum(1))
    >>> sm(model, torch.eye(2, dtype=torch.float64)).item()  # (½ - 2) / 2
    -0.75
    """
    _check_y(y)
    d = _features(y)
    if d > SM_MAX_FEATURES:
        raise ValueError(
            f"sm computes an exact Hessian trace (one backward pass per feature) and is limited "
            f"to SM_MAX_FEATURES={SM_MAX_FEATURES} features, got {d}; use 'ssm' instead."
        )
    grad_enabled = torch.is_grad_enabled()
    if supports_jet(model):
        # Taylor mode along the D coordinate axes: the gradient and the Hessian diagonal
        # from one forward pass, no backward pass (skebflow.objectives._jets).
        axes = torch.eye(d, dtype=y.dtype, device=y.device).reshape(d, 1, *y.shape[1:])
        _, first, second = energy_jet(model, y, axes.expand(d, *y.shape))
        return (0.5 * (first**2).sum(0) - second.sum(0)).mean() / d
    with torch.enable_grad():
        y, grad = _energy_grad(model, y, create_graph=True)
        flat = grad.flatten(1)
        trace_hessian = sum(
            torch.autograd.grad(flat[:, i].sum(), y, retain_graph=True, create_graph=grad_enabled)[
                0
            ].flatten(1)[:, i]
            for i in range(d)
        )
        loss = (0.5 * _squared_norm(grad) - trace_hessian).mean() / d
    return loss if grad_enabled else loss.detach()


def ssm(
    model: _EnergyFunction,
    y: Tensor,
    *,
    generator: torch.Generator | None = None,
    n_slices: int = 1,
    slice_distribution: str = "rademacher",
) -> Tensor:
    """Sliced score matching, variance-reduced: ``mean(½‖s‖² + vᵀ(∇_y s)v) / D`` [2]_.

    ``v`` is Rademacher or standard Gaussian (both have ``E[vvᵀ] = I``). For flows whose
    layers all have second-order rules (:func:`skebflow.objectives._jets.supports_jet`, e.g. the FC
    architecture) ``vᵀ(∇_y s)v`` comes from first-order tangents and the score's reverse pass
    (:func:`skebflow.objectives._jets.energy_score_curvature`); otherwise from a
    Hessian-vector product by double backward. ``n_slices > 1`` draws ``n_slices`` slices
    per sample in one batched call (the rows of ``v`` match ``y.repeat(n_slices, 1)``), so it
    equals ``n_slices=1`` on the tiled batch. The energy must be twice differentiable.

    Parameters
    ----------
    model : EnergyModel
        The model.
    y : Tensor of shape (n_samples, n_features)
        The batch.
    generator : torch.Generator or None
        Source of the slices.
    n_slices : int, default=1
        Number of slices per sample (positive).
    slice_distribution : {"rademacher", "gaussian"}, default="rademacher"
        Distribution of ``v``.

    Returns
    -------
    Tensor
        Scalar loss.

    Examples
    --------
    >>> import types, torch
    >>> model = types.SimpleNamespace(energy=lambda y: 0.5 * (y**2).sum(1))
    >>> y = torch.eye(2, dtype=torch.float64)
    >>> ssm(model, y, generator=torch.Generator().manual_seed(0)).item()  # exact: vᵀv = D
    -0.75
    """
    _check_y(y)
    if isinstance(n_slices, bool) or not isinstance(n_slices, numbers.Integral) or n_slices < 1:
        raise ValueError(f"n_slices must be a positive integer, got {n_slices!r}.")
    if slice_distribution not in _SLICE_DISTRIBUTIONS:
        raise ValueError(
            f"slice_distribution must be one of {_SLICE_DISTRIBUTIONS}, got {slice_distribution!r}."
        )
    generator = _generator(generator, y)
    n_slices = int(n_slices)
    shape = (n_slices * y.shape[0], *y.shape[1:])
    options = {"generator": generator, "device": y.device, "dtype": y.dtype}
    if slice_distribution == "rademacher":
        v = torch.randint(0, 2, shape, **options) * 2 - 1
    else:
        v = torch.randn(shape, **options)
    grad_enabled = torch.is_grad_enabled()
    with torch.enable_grad():
        if supports_jet(model):
            # First-order tangents forward, one reverse pass for the score and the adjoints
            # that weight the nonlinearities' second-order sources (skebflow.objectives._jets).
            _require_autograd()
            _, grad, second = energy_score_curvature(
                model, y, v.reshape(n_slices, *y.shape), create_graph=grad_enabled
            )
            quadratic = second.mean(0)
        else:
            repeats = (n_slices,) + (1,) * (y.ndim - 1)
            y, grad = _energy_grad(model, y.detach().repeat(*repeats), create_graph=True)
            (hvp,) = torch.autograd.grad((grad * v).sum(), y, create_graph=grad_enabled)
            quadratic = (v * hvp).flatten(1).sum(1)
        loss = (0.5 * _squared_norm(grad).mean() - quadratic.mean()) / _features(y)
    return loss if grad_enabled else loss.detach()


def dsm(
    model: _EnergyFunction,
    y: Tensor,
    *,
    generator: torch.Generator | None = None,
    noise_scale: float = 0.1,
) -> Tensor:
    """Denoising score matching: ``mean ½‖s(y + σε) + ε/σ‖² / D``, ``ε ~ N(0, I)`` [3]_.

    Fits the score of the data convolved with ``N(0, σ² I)`` (``σ = noise_scale``), so the
    learned density is slightly wider than the data. Needs one input gradient.

    Parameters
    ----------
    model : EnergyModel
        The model.
    y : Tensor of shape (n_samples, n_features)
        The batch.
    generator : torch.Generator or None
        Source of the noise.
    noise_scale : float, default=0.1
        The noise standard deviation σ (> 0).

    Returns
    -------
    Tensor
        Scalar loss.

    Examples
    --------
    >>> import types, torch
    >>> model = types.SimpleNamespace(energy=lambda y: 0.5 * (y**2).sum(1))
    >>> loss = dsm(model, torch.zeros(4, 2), generator=torch.Generator().manual_seed(0))
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    """
    _check_y(y)
    _check_positive("noise_scale", noise_scale)
    generator = _generator(generator, y)
    eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    grad_enabled = torch.is_grad_enabled()
    noisy = y.detach() + noise_scale * eps
    with torch.enable_grad():
        if supports_jet(model):
            # The score's reverse pass without a gradient for the noisy points themselves
            # when the loss is differentiated (skebflow.objectives._jets; no slices).
            _require_autograd()
            no_slices = noisy.new_zeros((0, *noisy.shape))
            _, grad, _ = energy_score_curvature(model, noisy, no_slices, create_graph=grad_enabled)
        else:
            _, grad = _energy_grad(model, noisy, create_graph=grad_enabled)
        # s + ε/σ with s = -∇E
        loss = 0.5 * _squared_norm(eps / noise_scale - grad).mean() / _features(y)
    return loss if grad_enabled else loss.detach()


def fdssm(
    model: _EnergyFunction,
    y: Tensor,
    *,
    generator: torch.Generator | None = None,
    fd_epsilon: float = 0.1,
) -> Tensor:
    """Finite-difference sliced score matching [4]_, [5]_.

    With ``v`` uniform on the sphere of radius ``ξ = fd_epsilon``, the loss is the batch mean of
    ``[(E(y+v) - E(y-v))²/8 + 2E(y) - E(y+v) - E(y-v)] / ξ²``. By Taylor expansion this is
    ``[½(vᵀ∇E)² - vᵀ(∇²E)v] / ξ² + O(ξ²)``, and ``E[vvᵀ] = ξ²/D · I`` on that sphere, so it
    already estimates the score-matching loss divided by ``D``: it is **not** divided by ``D``
    again. The three energies come from one batched call; no input gradient is taken.

    Parameters
    ----------
    model : EnergyModel
        The model.
    y : Tensor of shape (n_samples, n_features)
        The batch.
    generator : torch.Generator or None
        Source of the directions.
    fd_epsilon : float, default=0.1
        The step radius ξ (> 0); small values amplify rounding errors in low precision.

    Returns
    -------
    Tensor
        Scalar loss.

    Examples
    --------
    >>> import types, torch
    >>> model = types.SimpleNamespace(energy=lambda y: 0.5 * (y**2).sum(1))
    >>> y = torch.zeros(3, 1, dtype=torch.float64)  # 1-D: v = ±ξ, exact for a quadratic
    >>> round(float(fdssm(model, y, generator=torch.Generator().manual_seed(0))), 12)
    -1.0
    """
    _check_y(y)
    _check_positive("fd_epsilon", fd_epsilon)
    generator = _generator(generator, y)
    direction = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    norms = direction.flatten(1).norm(dim=1).reshape(-1, *([1] * (y.ndim - 1)))
    v = fd_epsilon * direction / norms
    energy = _energy(model, torch.cat([y, y + v, y - v]))
    e0, e_plus, e_minus = energy.chunk(3)
    per_sample = (e_plus - e_minus) ** 2 / 8 + 2 * e0 - e_plus - e_minus
    return per_sample.mean() / fd_epsilon**2
