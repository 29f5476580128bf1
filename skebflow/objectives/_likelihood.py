"""Likelihood objectives: maximum likelihood and its sampling-based variant.

Every objective is a pure function ``f(model, y, *, generator=None, **options)`` returning a
scalar tensor: a per-sample loss, averaged over the batch and divided by the number ``D`` of
entries of one sample (the convention of [1]_); ``y`` has shape ``(n, *event_shape)``. The
model only has to follow :class:`EnergyModel`.
:func:`mean_energy` is the cost floor used by the benchmarks and is not an objective. The
score-matching objectives live in :mod:`skebflow.objectives._score_matching`; all of them are
chosen by name through :mod:`skebflow.objectives._registry`.

Randomness (model samples) comes only from ``generator``; with ``None`` a fresh local
generator seeded from the operating system is used, so the global RNG is never consumed.
The input ``y`` is never modified.

References
----------
.. [1] C.-H. Chao, W.-F. Sun, Y.-C. Hsu, Z. Kira, C.-Y. Lee, "Training energy-based
   normalizing flow with score-matching objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from skebflow.objectives._score_matching import _check_y, _energy, _features, _generator

__all__ = ["EnergyModel", "mean_energy", "ml", "sml"]


@runtime_checkable
class EnergyModel(Protocol):
    """What an objective needs from a model: ``log p(y) = -energy(y) - log_normalizer()``.

    Examples
    --------
    >>> import math, types, torch
    >>> model = types.SimpleNamespace(
    ...     energy=lambda y: 0.5 * (y**2).sum(1),
    ...     log_normalizer=lambda: torch.tensor(math.log(2 * math.pi)),
    ...     sample=lambda n, *, generator=None: torch.randn(n, 2, generator=generator),
    ... )
    >>> isinstance(model, EnergyModel)
    True
    """

    def energy(self, y: Tensor) -> Tensor:
        """Return the energy of each row of ``y`` (n, D), shape (n,), differentiable."""
        ...

    def log_normalizer(self) -> Tensor:
        """Return the scalar log-normalizer ``log Z`` (differentiable in the parameters)."""
        ...

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` exact samples from the model, shape (n, D)."""
        ...


def ml(model: EnergyModel, y: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Maximum likelihood: ``(mean E(y) + log Z) / D``, the negative log-likelihood per dimension.

    Needs ``log_normalizer()`` at every step (for a flow, the log-determinants of all its linear
    layers): the expensive baseline. ``generator`` is accepted for a uniform signature and unused.

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

    Examples
    --------
    >>> import math, types, torch
    >>> model = types.SimpleNamespace(energy=lambda y: 0.5 * (y**2).sum(1),
    ...                               log_normalizer=lambda: torch.tensor(math.log(2 * math.pi)))
    >>> round(float(ml(model, torch.eye(2))), 6)  # (0.5 + log 2π) / 2
    1.168939
    """
    _check_y(y)
    log_z = model.log_normalizer()
    if log_z.numel() != 1:
        raise ValueError(f"model.log_normalizer must return a scalar, got {tuple(log_z.shape)}.")
    return (_energy(model, y).mean() + log_z.reshape(())) / _features(y)


def sml(model: EnergyModel, y: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Sampling-based maximum likelihood: ``(mean E(y) - mean E(y_model)) / D``.

    ``y_model = model.sample(len(y), generator=generator)`` is drawn without gradient, so the
    gradient flows only through the parameters inside the energy; since ``∇ log Z =
    -E_model[∇E]``, the expected parameter gradient equals that of :func:`ml`, without any
    determinant [1]_. Both batches go through one energy call. The value itself is not a
    likelihood (its expectation is 0 at the optimum).

    Parameters
    ----------
    model : EnergyModel
        The model; ``sample`` must draw exact samples.
    y : Tensor of shape (n_samples, n_features)
        The batch.
    generator : torch.Generator or None
        Passed to ``model.sample``.

    Returns
    -------
    Tensor
        Scalar loss.

    Examples
    --------
    >>> import types, torch
    >>> model = types.SimpleNamespace(energy=lambda y: 0.5 * (y**2).sum(1),
    ...     sample=lambda n, *, generator=None: torch.randn(n, 2, generator=generator))
    >>> loss = sml(model, torch.zeros(8, 2), generator=torch.Generator().manual_seed(0))
    >>> bool(loss < 0)  # E(0) = 0 is the lowest energy
    True
    """
    _check_y(y)
    generator = _generator(generator, y)
    n = y.shape[0]
    with torch.no_grad():
        y_model = model.sample(n, generator=generator)
    y_model = y_model.detach().to(y)
    if y_model.shape != y.shape:
        raise ValueError(
            f"model.sample({n}) returned shape {tuple(y_model.shape)}, not {(n, *y.shape[1:])}."
        )
    energy = _energy(model, torch.cat([y, y_model]))
    return (energy[:n].mean() - energy[n:].mean()) / _features(y)


def mean_energy(
    model: EnergyModel, y: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Mean energy divided by ``D``: the cheapest possible step (a benchmark floor, not a loss).

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
        Scalar.

    Examples
    --------
    >>> import types, torch
    >>> model = types.SimpleNamespace(energy=lambda y: 0.5 * (y**2).sum(1))
    >>> float(mean_energy(model, torch.eye(2)))
    0.25
    """
    _check_y(y)
    return _energy(model, y).mean() / _features(y)
