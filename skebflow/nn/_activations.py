"""Elementwise nonlinear layers: the smooth leaky ReLU of the EBFlow paper.

Its Jacobian depends on the input, so it enters the energy (with its log-derivative).

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from skebflow.nn._base import Jet, Layer, TangentTape, event_sum

__all__ = ["SmoothLeakyReLU"]


class SmoothLeakyReLU(Layer):
    r"""Elementwise smooth leaky ReLU :math:`f(x) = \alpha x + (1-\alpha)\,\mathrm{softplus}(x)`.

    With ``residual=True`` the map is :math:`x + f(x)`. Both are strictly increasing and
    convex, with :math:`f'(x) = \alpha + (1-\alpha)\sigma(x) \in (\alpha, 1)`, and infinitely
    differentiable (as score matching needs). The inverse runs Newton's method from an
    upper bracket, which converges monotonically for a convex increasing map.

    Parameters
    ----------
    alpha : float, default=0.3
        Slope for large negative inputs, in (0, 1).
    residual : bool, default=False
        Add the identity.
    tol : float, default=1e-12
        Newton stopping tolerance (relative to ``1 + |x|``).
    max_steps : int, default=100
        Newton steps before giving up with :class:`FloatingPointError`.

    Examples
    --------
    >>> layer = SmoothLeakyReLU()
    >>> x = torch.linspace(-5, 5, 11, dtype=torch.float64).unsqueeze(1)
    >>> y, _ = layer(x)
    >>> bool((layer.inverse(y) - x).abs().max() < 1e-10)
    True
    """

    def __init__(
        self,
        alpha: float = 0.3,
        *,
        residual: bool = False,
        tol: float = 1e-12,
        max_steps: int = 100,
    ) -> None:
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
        self.alpha = float(alpha)
        self.residual = bool(residual)
        self.tol = float(tol)
        self.max_steps = int(max_steps)
        self._linear = self.alpha + (1.0 if residual else 0.0)
        self._soft = 1.0 - self.alpha

    def _value(self, x: Tensor) -> Tensor:
        return self._linear * x + self._soft * F.softplus(x)

    def derivatives(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Return :math:`f(x)` and its first three derivatives, elementwise.

        With :math:`\sigma` the logistic function, :math:`f' = a + b\sigma`,
        :math:`f'' = b\sigma(1-\sigma)` and :math:`f''' = f''(1 - 2\sigma)` (``a``, ``b``
        the linear and softplus coefficients); the Taylor-mode rules of
        :mod:`skebflow.objectives._jets` need them up to third order (the curvature of
        :math:`\log f'`).

        Examples
        --------
        >>> layer = SmoothLeakyReLU(0.5)
        >>> value, d1, d2, d3 = layer.derivatives(torch.zeros(1))
        >>> float(d1), float(d2), float(d3)  # 0.5 + 0.5 / 2, 0.5 / 4, 0
        (0.75, 0.125, 0.0)
        """
        s = torch.sigmoid(x)
        d2 = self._soft * s * (1.0 - s)
        return self._value(x), self._linear + self._soft * s, d2, d2 * (1.0 - 2.0 * s)

    def _log_slope_derivatives(self, x: Tensor) -> tuple[Tensor, ...]:
        """``f``, ``f'``, ``f''``, ``r = (log f')'`` and ``r'``, elementwise."""
        y, d1, d2, d3 = self.derivatives(x)
        r = d2 / d1
        return y, d1, d2, r, d3 / d1 - r * r

    def jet(
        self, x: Tensor, dx: Tensor, ddx: Tensor | None
    ) -> tuple[Jet, tuple[Tensor, Tensor, Tensor]]:
        r"""Push a 2-jet through the layer (the elementwise rule).

        The output jet is :math:`(f, f'\dot x, f''\dot x^2 + f'\ddot x)` and the jet of
        :math:`\sum\log f'` is :math:`(\sum r\dot x, \sum r'\dot x^2 + r\ddot x)`.
        """
        y, d1, d2, r, dr = self._log_slope_derivatives(x)
        dx2 = dx * dx
        dy, ddy = d1 * dx, d2 * dx2
        ladj = event_sum(torch.log(d1), 1)
        dladj, ddladj = event_sum(r * dx, 2), event_sum(dr * dx2, 2)
        if ddx is not None:
            ddy = ddy + d1 * ddx
            ddladj = ddladj + event_sum(r * ddx, 2)
        return (y, dy, ddy), (ladj, dladj, ddladj)

    def tangent(self, x: Tensor, dx: Tensor, tape: TangentTape) -> tuple[Tensor, Tensor]:
        r"""Push the primal and first-order tangents through the layer.

        Records :math:`\sum\log f'`, :math:`\sum r'\dot x^2` and the second-order source
        :math:`f''\dot x^2` of the Hessian quadratic form on ``tape``.
        """
        y, d1, d2, _, dr = self._log_slope_derivatives(x)
        dx2 = dx * dx
        tape.record(y, event_sum(torch.log(d1), 1), event_sum(dr * dx2, 2), d2 * dx2)
        return y, d1 * dx

    def _slope(self, x: Tensor) -> Tensor:
        return self._linear + self._soft * torch.sigmoid(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(f(x), sum(log f'(x)))``."""
        ladj = torch.log(self._slope(x)).flatten(1).sum(dim=1)
        return self._value(x), ladj

    def inverse(self, y: Tensor) -> Tensor:
        """Invert by Newton's method started above the root (monotone convergence).

        The stopping tolerance is ``tol`` or, where the dtype cannot resolve it (float32),
        a few units in the last place.
        """
        if not bool(torch.isfinite(y).all()):
            raise FloatingPointError("SmoothLeakyReLU.inverse got non-finite values.")
        tol = max(self.tol, 16.0 * torch.finfo(y.dtype).eps)
        with torch.no_grad():
            # f(x) >= a x + b max(x, 0); its inverse at y is an upper bound of the root.
            x = torch.where(y >= 0, y / (self._linear + self._soft), y / self._linear)
            for _ in range(self.max_steps):
                step = (self._value(x) - y) / self._slope(x)
                x = x - step
                if bool((step.abs() <= tol * (1.0 + x.abs())).all()):
                    break
            else:
                raise FloatingPointError(
                    f"SmoothLeakyReLU.inverse did not converge in {self.max_steps} Newton steps."
                )
        return x
