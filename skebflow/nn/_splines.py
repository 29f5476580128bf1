r"""Monotone rational-quadratic splines and the spline coupling layer.

A rational-quadratic (RQ) spline [1]_ maps the interval :math:`[-B, B]` onto itself through
``K`` bins; inside bin :math:`k`, with :math:`\xi = (x - x_k) / w_k \in [0, 1]`, bin slope
:math:`s_k = h_k / w_k` and knot derivatives :math:`d_k, d_{k+1} > 0`,

.. math::

    g(x) = y_k + h_k \frac{s_k \xi^2 + d_k \xi (1 - \xi)}
                          {s_k + (d_{k+1} + d_k - 2 s_k)\,\xi (1 - \xi)},

which is strictly increasing, with a closed-form inverse (the root of a quadratic) and
derivative

.. math::

    g'(x) = s_k^2 \frac{d_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + d_k (1 - \xi)^2}
                       {\left[s_k + (d_{k+1} + d_k - 2 s_k)\,\xi (1 - \xi)\right]^2}.

Outside :math:`[-B, B]` the map is the identity (linear tails), and the derivatives at
:math:`\pm B` are 1, so :math:`g` is continuously differentiable everywhere and a point
beyond the data keeps the base density's Gaussian tail instead of a saturated scale.

What score matching sees. :math:`g` is :math:`C^1` and piecewise smooth: inside every
bin it is a rational function (infinitely differentiable), and at the knots its second
derivative jumps. The energy contains :math:`\log g'`, so the score
:math:`-\nabla E` is continuous and piecewise smooth, and the Hessian terms of
``"sm"``/``"ssm"`` exist everywhere except on the knots (a set of measure zero, hit with
probability zero); autograd differentiates the rational pieces exactly. Derivatives
through the knot positions themselves (the conditioner's output) are smooth.

References
----------
.. [1] C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural Spline Flows",
   NeurIPS 2019.
.. [2] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skebflow.nn._base import Layer
from skebflow.nn._coupling import smooth_mlp

__all__ = [
    "RationalQuadraticCoupling",
    "RationalQuadraticSpline",
    "check_spline_options",
    "rq_spline",
    "rq_spline_inverse",
]

#: Smallest bin width and height, as a fraction of the box (keeps the spline invertible).
MIN_BIN = 1e-3
#: Smallest knot derivative.
MIN_DERIVATIVE = 1e-3
# softplus(_UNIT_SHIFT) = 1 - MIN_DERIVATIVE: a zero conditioner output means unit slopes.
_UNIT_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _knots(
    raw_widths: Tensor, raw_heights: Tensor, raw_derivatives: Tensor, bound: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Turn unconstrained parameters ``(..., K)``, ``(..., K)``, ``(..., K-1)`` into knots.

    Returns the knot abscissae and ordinates ``(..., K+1)`` on ``[-bound, bound]`` and
    the derivatives at the knots ``(..., K+1)`` (1 at both ends, matching the tails).
    """
    n_bins = raw_widths.shape[-1]
    ones = torch.ones_like(raw_derivatives[..., :1])
    knot_derivatives = MIN_DERIVATIVE + F.softplus(raw_derivatives + _UNIT_SHIFT)
    derivatives = torch.cat([ones, knot_derivatives, ones], dim=-1)

    def positions(raw: Tensor) -> Tensor:
        fractions = MIN_BIN + (1.0 - MIN_BIN * n_bins) * torch.softmax(raw, dim=-1)
        cumulative = torch.cumsum(fractions, dim=-1)
        # Both ends are exact: the first knot is -bound and the last +bound.
        cumulative = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative], dim=-1)
        cumulative = cumulative / cumulative[..., -1:]
        return bound * (2.0 * cumulative - 1.0)

    return positions(raw_widths), positions(raw_heights), derivatives


def _bin(knots: Tensor, values: Tensor) -> Tensor:
    """Index of the bin of each value, in ``[0, K-1]`` (values clamped into the box)."""
    index = torch.searchsorted(knots.detach().contiguous(), values.detach().unsqueeze(-1))
    return (index.squeeze(-1) - 1).clamp(0, knots.shape[-1] - 2)


def _gather(tensor: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Values at the left and right knot of each bin."""
    index = index.unsqueeze(-1)
    return tensor.gather(-1, index).squeeze(-1), tensor.gather(-1, index + 1).squeeze(-1)


def _locate(
    values: Tensor,
    raw_widths: Tensor,
    raw_heights: Tensor,
    raw_derivatives: Tensor,
    bound: float,
    *,
    by_output: bool,
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """Find each value's bin, by the knots' abscissae or (``by_output``) ordinates.

    Returns the mask of values inside the box, the values with the outside ones set to 0
    (a safe point for the rational formulas, discarded by the caller), and the bin's
    ``x_k, y_k, d_k, d_{k+1}``, width and height.
    """
    xs, ys, ds = _knots(raw_widths, raw_heights, raw_derivatives, bound)
    inside = (values > -bound) & (values < bound)
    values_in = torch.where(inside, values, torch.zeros_like(values))
    k = _bin(ys if by_output else xs, values_in)
    x_k, x_k1 = _gather(xs, k)
    y_k, y_k1 = _gather(ys, k)
    d_k, d_k1 = _gather(ds, k)
    return inside, values_in, (x_k, y_k, d_k, d_k1, x_k1 - x_k, y_k1 - y_k)


def check_spline_options(n_bins: int, bound: float) -> None:
    """Raise :class:`ValueError` unless ``n_bins >= 2`` and ``bound > 0``.

    Examples
    --------
    >>> check_spline_options(8, 4.0)
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2, got {n_bins}.")
    if not bound > 0:
        raise ValueError(f"bound must be positive, got {bound}.")


def rq_spline(
    x: Tensor,
    raw_widths: Tensor,
    raw_heights: Tensor,
    raw_derivatives: Tensor,
    *,
    bound: float,
) -> tuple[Tensor, Tensor]:
    r"""Apply the elementwise RQ spline with identity tails; return ``(y, log g'(x))``.

    Parameters
    ----------
    x : Tensor of shape (...)
        Inputs.
    raw_widths, raw_heights : Tensor of shape (..., K)
        Unconstrained bin widths and heights (a softmax makes them fractions of the box).
    raw_derivatives : Tensor of shape (..., K - 1)
        Unconstrained derivatives at the interior knots (zero means a unit derivative).
    bound : float
        Half-width :math:`B` of the box :math:`[-B, B]`.

    Returns
    -------
    y : Tensor of shape (...)
        :math:`g(x)`.
    log_derivative : Tensor of shape (...)
        :math:`\log g'(x)` (0 in the tails).

    Examples
    --------
    >>> x = torch.linspace(-6, 6, 7, dtype=torch.float64)
    >>> zeros = torch.zeros(7, 4, dtype=torch.float64)
    >>> y, log_d = rq_spline(x, zeros, zeros, zeros[:, :3], bound=3.0)  # uniform bins
    >>> bool(torch.allclose(y, x)), bool(log_d.abs().max() < 1e-12)
    (True, True)
    """
    inside, x_in, (x_k, y_k, d_k, d_k1, width, height) = _locate(
        x, raw_widths, raw_heights, raw_derivatives, bound, by_output=False
    )
    slope = height / width
    xi = (x_in - x_k) / width
    mix = xi * (1.0 - xi)
    denominator = slope + (d_k1 + d_k - 2.0 * slope) * mix
    y_in = y_k + height * (slope * xi.square() + d_k * mix) / denominator
    numerator = d_k1 * xi.square() + 2.0 * slope * mix + d_k * (1.0 - xi).square()
    log_d = 2.0 * torch.log(slope) + torch.log(numerator) - 2.0 * torch.log(denominator)
    return torch.where(inside, y_in, x), torch.where(inside, log_d, torch.zeros_like(log_d))


def rq_spline_inverse(
    y: Tensor,
    raw_widths: Tensor,
    raw_heights: Tensor,
    raw_derivatives: Tensor,
    *,
    bound: float,
) -> Tensor:
    """Invert :func:`rq_spline` in closed form (the stable root of a quadratic).

    Parameters
    ----------
    y : Tensor of shape (...)
        Outputs of the spline.
    raw_widths, raw_heights, raw_derivatives : Tensor
        The parameters given to :func:`rq_spline`.
    bound : float
        Half-width of the box.

    Returns
    -------
    Tensor of shape (...)
        :math:`g^{-1}(y)`.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> w, h, d = (torch.randn(5, n, generator=g, dtype=torch.float64) for n in (4, 4, 3))
    >>> x = torch.linspace(-4, 4, 5, dtype=torch.float64)
    >>> y, _ = rq_spline(x, w, h, d, bound=3.0)
    >>> bool(torch.allclose(rq_spline_inverse(y, w, h, d, bound=3.0), x))
    True
    """
    inside, y_in, (x_k, y_k, d_k, d_k1, width, height) = _locate(
        y, raw_widths, raw_heights, raw_derivatives, bound, by_output=True
    )
    slope = height / width
    offset = y_in - y_k
    curvature = d_k1 + d_k - 2.0 * slope
    a = height * (slope - d_k) + offset * curvature
    b = height * d_k - offset * curvature
    c = -slope * offset
    discriminant = (b.square() - 4.0 * a * c).clamp_min(0.0)
    xi = (2.0 * c) / (-b - torch.sqrt(discriminant))
    return torch.where(inside, x_k + xi * width, y)


class RationalQuadraticCoupling(Layer):
    r"""Coupling layer whose transformed half goes through monotone RQ splines.

    Half of the features (``index % 2 == parity``) condition, through a smooth MLP
    (SiLU by default), the ``3K - 1`` spline parameters of every other feature; outside
    :math:`[-B, B]` the map is the identity. The Jacobian is triangular with diagonal
    :math:`g'`, so the log-determinant is :math:`\sum \log g'` and depends on the input:
    the layer belongs to the energy (the set **N** of [2]_). The conditioner's last
    layer starts at zero, i.e. uniform bins with unit derivatives: the identity.

    Parameters
    ----------
    features : int
        Dimension :math:`D \ge 2`.
    parity : int, default=0
        Features with ``index % 2 == parity`` condition the others.
    hidden_features : tuple of int, default=(64, 64)
        Widths of the conditioner's hidden layers.
    n_bins : int, default=8
        Number of bins :math:`K`.
    bound : float, default=4.0
        Half-width :math:`B` of the spline's box (in the layer's input units; the
        architectures put an ActNorm in front, so inputs are roughly standardized).
    activation : callable, default=torch.nn.SiLU
        Constructor of the smooth activation of the conditioner.
    generator : torch.Generator, optional
        Source of the conditioner's initial weights.

    Examples
    --------
    >>> layer = RationalQuadraticCoupling(3).double()
    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> y, ladj = layer(x)
    >>> bool(torch.allclose(y, x)), bool(torch.allclose(layer.inverse(y), x))
    (True, True)

    References
    ----------
    .. [1] C. Durkan et al., "Neural Spline Flows", NeurIPS 2019.
    .. [2] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
       Objectives", NeurIPS 2023.
    """

    def __init__(
        self,
        features: int,
        *,
        parity: int = 0,
        hidden_features: tuple[int, ...] = (64, 64),
        n_bins: int = 8,
        bound: float = 4.0,
        activation: Callable[[], nn.Module] = nn.SiLU,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if features < 2:
            raise ValueError("RationalQuadraticCoupling needs at least 2 features.")
        check_spline_options(n_bins, bound)
        self.register_buffer("cond_index", torch.arange(parity % 2, features, 2))
        self.register_buffer("trans_index", torch.arange(1 - parity % 2, features, 2))
        n_cond, n_trans = len(self.cond_index), len(self.trans_index)
        self.n_bins = int(n_bins)
        self.bound = float(bound)
        out = n_trans * (3 * self.n_bins - 1)
        self.net = smooth_mlp(n_cond, out, tuple(hidden_features), activation, generator)

    def _params(self, x_cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raw = self.net(x_cond).unflatten(-1, (len(self.trans_index), 3 * self.n_bins - 1))
        k = self.n_bins
        return raw[..., :k], raw[..., k : 2 * k], raw[..., 2 * k :]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(y, sum(log g'(x_B)))``."""
        x_cond, x_trans = x[:, self.cond_index], x[:, self.trans_index]
        y_trans, log_d = rq_spline(x_trans, *self._params(x_cond), bound=self.bound)
        y = torch.empty_like(x)
        y[:, self.cond_index] = x_cond
        y[:, self.trans_index] = y_trans
        return y, log_d.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """Closed-form inverse, bin by bin."""
        y_cond, y_trans = y[:, self.cond_index], y[:, self.trans_index]
        x = torch.empty_like(y)
        x[:, self.cond_index] = y_cond
        x[:, self.trans_index] = rq_spline_inverse(y_trans, *self._params(y_cond), bound=self.bound)
        return x


class RationalQuadraticSpline(Layer):
    r"""An elementwise rational-quadratic spline with learned, unconditional knots.

    Every feature gets its own monotone spline on the box :math:`[-B, B]` (identity
    tails), whose ``n_bins`` widths, heights and interior derivatives are parameters,
    not functions of other features. It is the spline flows' flexible layer for
    one-dimensional data, where a coupling has no half to condition on: stacked between
    affine layers it draws multimodal densities (two bumps with an empty gap) that a
    residual smooth leaky ReLU cannot. It starts at the identity.

    Parameters
    ----------
    features : int
        Data dimension :math:`D`.
    n_bins : int, default=8
        Bins of every spline.
    bound : float, default=4.0
        Half-width of the box (beyond it, the identity).

    Examples
    --------
    >>> layer = RationalQuadraticSpline(1).double()
    >>> x = torch.linspace(-5, 5, 11, dtype=torch.float64)[:, None]
    >>> y, ladj = layer(x)
    >>> bool(torch.allclose(y, x)), bool(ladj.abs().max() < 1e-12)
    (True, True)
    >>> with torch.no_grad():
    ...     _ = layer.raw_heights.normal_(generator=torch.Generator().manual_seed(0))
    >>> bool(torch.allclose(layer.inverse(layer(x)[0]), x))
    True

    References
    ----------
    .. [1] C. Durkan et al., "Neural Spline Flows", NeurIPS 2019.
    """

    def __init__(self, features: int, *, n_bins: int = 8, bound: float = 4.0) -> None:
        super().__init__()
        check_spline_options(n_bins, bound)
        self.n_bins, self.bound = int(n_bins), float(bound)
        self.raw_widths = nn.Parameter(torch.zeros(features, self.n_bins))
        self.raw_heights = nn.Parameter(torch.zeros(features, self.n_bins))
        self.raw_derivatives = nn.Parameter(torch.zeros(features, self.n_bins - 1))

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shape = (x.shape[0], -1, -1)
        return (
            self.raw_widths.expand(*shape),
            self.raw_heights.expand(*shape),
            self.raw_derivatives.expand(*shape),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(g(x), sum(log g'(x)))``."""
        y, log_d = rq_spline(x, *self._params(x), bound=self.bound)
        return y, log_d.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """Closed-form inverse, bin by bin."""
        return rq_spline_inverse(y, *self._params(y), bound=self.bound)
