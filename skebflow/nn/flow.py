r"""The energy-based normalizing flow: a stack of invertible layers and a Gaussian base.

For a flow :math:`f = f_L \circ \dots \circ f_1` with base :math:`N(0, I)`,

.. math::

    \log p(y) = -E(y) - \log Z, \qquad
    E(y) = -\log N(f(y); 0, I) - \sum_{l \in N} \log|\det J_l|, \qquad
    \log Z = -\sum_{l \in C} \log|\det J_l|,

where :math:`C` holds the layers with a constant Jacobian. :meth:`EnergyFlow.energy`
never computes a determinant; :meth:`EnergyFlow.log_normalizer` is the only place where
determinants are taken.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from skebflow.nn.base import Layer

__all__ = ["EnergyFlow"]


class EnergyFlow(nn.Module):
    """Normalizing flow whose log-density is split into an energy and a log-normalizer.

    Parameters
    ----------
    layers : sequence of Layer
        The transformations, applied in order from data to latent.
    features : int
        The data dimension :math:`D`.

    Examples
    --------
    >>> from skebflow.nn.activations import SmoothLeakyReLU
    >>> from skebflow.nn.linear import Dense
    >>> flow = EnergyFlow([Dense(2), SmoothLeakyReLU(), Dense(2)], features=2).double()
    >>> y = torch.randn(5, 2, dtype=torch.float64)
    >>> lp = flow.log_prob(y)
    >>> torch.allclose(lp, -flow.energy(y) - flow.log_normalizer())
    True
    >>> x = flow.sample(3, generator=torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([3, 2])
    """

    def __init__(self, layers: Sequence[Layer], features: int) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be positive, got {features}.")
        self.layers = nn.ModuleList(layers)
        self.features = int(features)

    def _base_constant(self) -> float:
        return 0.5 * self.features * math.log(2.0 * math.pi)

    def transform(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Map data to latent; return ``(z, ladj)`` summed over non-constant layers only.

        Parameters
        ----------
        y : Tensor of shape (n, D)
            Data (after any preprocessing).

        Returns
        -------
        z : Tensor of shape (n, D)
            The latent point :math:`f(y)`.
        ladj : Tensor of shape (n,)
            :math:`\sum_{l \in N} \log|\det J_l|`; constant layers are applied through
            their determinant-free ``map``.
        """
        ladj = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        x = y
        for layer in self.layers:
            if layer.constant_jacobian:
                x = layer.map(x)
            else:
                x, layer_ladj = layer(x)
                ladj = ladj + layer_ladj
        return x, ladj

    def energy(self, y: Tensor) -> Tensor:
        r"""Return the per-sample energy :math:`E(y)` (no determinant is computed).

        Parameters
        ----------
        y : Tensor of shape (n, D)
            Data.

        Returns
        -------
        Tensor of shape (n,)
            Energy :math:`\tfrac12\|f(y)\|^2 + \tfrac D2 \log 2\pi
            - \sum_{l\in N}\log|\det J_l|`.
        """
        z, ladj = self.transform(y)
        return 0.5 * z.flatten(1).pow(2).sum(dim=1) + self._base_constant() - ladj

    def log_normalizer(self) -> Tensor:
        r"""Return :math:`\log Z = -\sum_{l \in C} \log|\det J_l|` (differentiable).

        This costs :math:`O(D^3)` per dense layer; callers outside training should cache
        it (the estimator does).

        Returns
        -------
        Tensor
            A scalar.
        """
        parameter = next(self.parameters(), None)
        total = torch.zeros(
            (),
            dtype=parameter.dtype if parameter is not None else torch.get_default_dtype(),
            device=parameter.device if parameter is not None else None,
        )
        for layer in self.layers:
            if layer.constant_jacobian:
                total = total - layer.logabsdet()
        return total

    def log_prob(self, y: Tensor, log_normalizer: Tensor | None = None) -> Tensor:
        r"""Return the normalized log-density :math:`-E(y) - \log Z`.

        Parameters
        ----------
        y : Tensor of shape (n, D)
            Data.
        log_normalizer : Tensor, optional
            A cached value of :meth:`log_normalizer`; computed when omitted.

        Returns
        -------
        Tensor of shape (n,)
            Log-densities.
        """
        if log_normalizer is None:
            log_normalizer = self.log_normalizer()
        return -self.energy(y) - log_normalizer

    def inverse(self, z: Tensor) -> Tensor:
        """Map latent points back to data space, :math:`f^{-1}(z)`.

        Parameters
        ----------
        z : Tensor of shape (n, D)
            Latent points.

        Returns
        -------
        Tensor of shape (n, D)
            Data points.
        """
        x = z
        for layer in reversed(self.layers):
            x = layer.inverse(x)
        return x

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``n`` exact samples by inverting base draws :math:`u \sim N(0, I)`.

        Parameters
        ----------
        n : int
            Number of samples.
        generator : torch.Generator, optional
            Source of the base draws; the global generator is used when omitted.

        Returns
        -------
        Tensor of shape (n, D)
            Samples (no gradient).
        """
        parameter = next(self.parameters())
        with torch.no_grad():
            z = torch.randn(
                n,
                self.features,
                generator=generator,
                dtype=parameter.dtype,
                device=parameter.device,
            )
            return self.inverse(z)
