r"""A soft barrier that keeps the dense layers of a flow away from singularity.

Maximum likelihood cannot make a dense layer singular: its loss contains
:math:`-\log|\det W|`. Score matching can, because the energy has no determinant: a
nearly singular :math:`W` makes the energy nearly flat along one direction, the density
nearly improper, and its mass leaks far from the data, where a Fisher divergence measured
at data points does not look (``docs/benchmarks.md``). :class:`SingularValueBarrier` adds

.. math:: \lambda \sum_{\text{dense } W} \sum_{i \in T(W)}
          \max\!\left(0,\ 1 - \frac{u_i^\top W v_i}{\tau}\right)^2

to the loss, where :math:`(u_i, v_i)` are the left and right singular vectors of the
singular values of :math:`W` below :math:`2\tau` (at most ``n_tracked`` per layer).
They are found every ``refresh`` calls by block inverse iteration with one LU
factorization of :math:`W` (:math:`O(D^3)`, amortized over ``refresh`` steps) and a
Rayleigh–Ritz step; in between, :math:`u_i^\top W v_i` follows the current weights at
:math:`O(k D^2)` per layer. With ``refresh=1`` and enough tracked pairs the penalty is
exact, since :math:`u_i^\top W v_i = \sigma_i` with gradient :math:`u_i v_i^\top`.

References
----------
.. [1] G. H. Golub, C. F. Van Loan, "Matrix Computations", 4th ed., 2013 (inverse
   iteration, Section 8.2; Rayleigh–Ritz, Section 10.1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skebflow.nn.linear import Dense

__all__ = ["SingularValueBarrier"]

_INVERSE_ITERATIONS = 3


def _dense_layers(flow: nn.Module) -> list[Dense]:
    return [m for m in flow.modules() if isinstance(m, Dense)]


class SingularValueBarrier:
    r"""Penalty on singular values of dense layers that fall below ``threshold``.

    Parameters
    ----------
    threshold : float
        :math:`\tau > 0`, the smallest singular value that goes unpenalized.
    strength : float, default=1.0
        :math:`\lambda`.
    refresh : int, default=50
        Calls between two searches for the small singular pairs.
    n_tracked : int, default=8
        Singular pairs searched for (and at most penalized) per layer.

    Examples
    --------
    >>> import torch
    >>> from skebflow.nn.architectures import build_fc
    >>> flow = build_fc(3, n_blocks=1).double()
    >>> with torch.no_grad():
    ...     _ = flow.layers[0].weight.copy_(torch.diag(torch.tensor([2.0, 1.0, 0.05])))
    >>> barrier = SingularValueBarrier(0.1, refresh=1)
    >>> round(float(barrier(flow)), 6)  # (1 - 0.05 / 0.1) ** 2
    0.25
    """

    def __init__(
        self,
        threshold: float,
        *,
        strength: float = 1.0,
        refresh: int = 50,
        n_tracked: int = 8,
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold!r}.")
        if not strength >= 0:
            raise ValueError(f"strength must be non-negative, got {strength!r}.")
        if refresh < 1 or n_tracked < 1:
            raise ValueError(
                f"refresh and n_tracked must be at least 1, got {refresh!r}, {n_tracked!r}."
            )
        self.threshold = float(threshold)
        self.strength = float(strength)
        self.refresh = int(refresh)
        self.n_tracked = int(n_tracked)
        self.n_calls = 0
        self._bases: dict[int, Tensor] = {}
        self._pairs: dict[int, tuple[Tensor, Tensor]] = {}

    def _search(self, key: int, weight: Tensor) -> None:
        """Find the singular pairs of ``weight`` below ``2 * threshold``."""
        w = weight.detach()
        d = w.shape[0]
        k = min(self.n_tracked, d)
        basis = self._bases.get(key)
        if basis is None or basis.shape != (d, k) or basis.dtype != w.dtype:
            generator = torch.Generator(device=w.device).manual_seed(key)
            basis = torch.randn(d, k, generator=generator, dtype=w.dtype, device=w.device)
        lu, pivots, info = torch.linalg.lu_factor_ex(w)
        if int(info.max()) == 0 and k < d:
            for _ in range(_INVERSE_ITERATIONS):
                # (WᵀW)⁻¹ X = W⁻¹ W⁻ᵀ X: favours the smallest singular directions.
                basis = torch.linalg.lu_solve(lu, pivots, basis, adjoint=True)
                basis = torch.linalg.lu_solve(lu, pivots, basis)
                basis = torch.linalg.qr(basis)[0]
        elif k == d:
            basis = torch.eye(d, dtype=w.dtype, device=w.device)
        self._bases[key] = basis
        # Rayleigh–Ritz: the SVD of W X gives the best pairs within span(X).
        left, values, right_h = torch.linalg.svd(w @ basis, full_matrices=False)
        keep = values < 2.0 * self.threshold
        self._pairs[key] = (left[:, keep], basis @ right_h[keep].mT)

    def search(self, flow: nn.Module) -> None:
        """Search every dense layer of ``flow`` for its small singular pairs now.

        :meth:`__call__` does this every ``refresh`` calls; the cost is one LU
        factorization per layer (``bench speed`` times it).
        """
        for key, layer in enumerate(_dense_layers(flow)):
            self._search(key, layer.weight)

    def __call__(self, flow: nn.Module) -> Tensor:
        """Return the penalty for the current weights of ``flow``'s dense layers."""
        dense = _dense_layers(flow)
        search = self.n_calls % self.refresh == 0
        self.n_calls += 1
        total = None
        for key, layer in enumerate(dense):
            weight = layer.weight
            if search or key not in self._pairs:
                self._search(key, weight)
            left, right = self._pairs[key]
            if left.shape[1] == 0:
                continue
            values = (left.to(weight) * (weight @ right.to(weight))).sum(0)
            term = torch.relu(1.0 - values / self.threshold).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            parameter = next(flow.parameters(), None)
            if parameter is None:
                return torch.zeros(())
            return torch.zeros((), dtype=parameter.dtype, device=parameter.device)
        return self.strength * total
