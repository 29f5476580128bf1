"""Invertible layers of energy-based normalizing flows.

Every layer is a :class:`torch.nn.Module` with one fused call ``layer(x) -> (y, ladj)``,
where ``ladj`` is the per-sample log-absolute-determinant of the Jacobian, an exact
``inverse(y)``, and a class attribute ``constant_jacobian``. Layers whose Jacobian does
not depend on the input (the set **C** of the EBFlow paper: dense linear maps, ActNorm,
fixed permutations) additionally expose

* ``map(x) -> y``: the transformation alone, with no determinant, and
* ``logabsdet() -> Tensor``: the scalar log-absolute-determinant.

An :class:`~skebflow.flow.EnergyFlow` calls ``map`` on constant-Jacobian layers when it
evaluates the energy, so that training with a score-matching objective never computes a
determinant; ``logabsdet`` only enters the log-normalizer. The affine coupling, the one
layer with a neural conditioner, lives in :mod:`skebflow.coupling`.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
.. [2] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
   Convolutions", NeurIPS 2018 (ActNorm).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ActNorm",
    "ConstantJacobianLayer",
    "Dense",
    "Layer",
    "Permutation",
    "SmoothLeakyReLU",
]


class Layer(nn.Module, abc.ABC):
    """Base class of invertible layers: ``layer(x) -> (y, ladj)`` and ``inverse(y)``."""

    constant_jacobian: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform ``x`` and return ``(y, ladj)`` with ``ladj`` of shape ``(n,)``."""

    @abc.abstractmethod
    def inverse(self, y: Tensor) -> Tensor:
        """Invert the transformation exactly."""


class ConstantJacobianLayer(Layer):
    """A layer whose Jacobian is independent of the input (the set **C**)."""

    constant_jacobian: ClassVar[bool] = True

    @abc.abstractmethod
    def map(self, x: Tensor) -> Tensor:
        """Apply the transformation without computing any determinant."""

    @abc.abstractmethod
    def logabsdet(self) -> Tensor:
        """Return the scalar log-absolute-determinant of the (constant) Jacobian."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Transform ``x`` and return ``(y, ladj)``; this computes the determinant."""
        return self.map(x), self.logabsdet().expand(x.shape[0])


class Dense(ConstantJacobianLayer):
    r"""Unconstrained dense linear layer :math:`y = W x + b`.

    The weight is a full :math:`D \times D` matrix with no LU, QR or triangular
    parameterization. Its log-determinant comes from :func:`torch.linalg.slogdet` and is
    only needed for the log-normalizer; the inverse reuses an LU factorization that is
    computed once per version of the weight.

    Parameters
    ----------
    features : int
        Dimension :math:`D`.
    bias : bool, default=True
        Whether to add a learnable bias.
    init : {"identity", "orthogonal"}, default="identity"
        Initial weight. ``"orthogonal"`` draws a random orthogonal matrix from
        ``generator``.
    generator : torch.Generator, optional
        Source of randomness for ``init="orthogonal"``.

    Examples
    --------
    >>> layer = Dense(3).double()
    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> y, ladj = layer(x)
    >>> torch.allclose(layer.inverse(y), x)
    True
    """

    def __init__(
        self,
        features: int,
        *,
        bias: bool = True,
        init: str = "identity",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if init == "identity":
            weight = torch.eye(features)
        elif init == "orthogonal":
            gaussian = torch.randn(features, features, generator=generator, dtype=torch.float64)
            q, r = torch.linalg.qr(gaussian)
            # The QR factor is column-major (strides (1, D)); a parameter keeps its layout,
            # and fused optimizers assume that a gradient has its parameter's layout, so
            # every parameter is created row-major (see skebflow.training.train_step).
            weight = (q * torch.sign(torch.diagonal(r))).float().contiguous()
        else:
            raise ValueError(f"init must be 'identity' or 'orthogonal', got {init!r}.")
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(features)) if bias else None
        self._lu_cache: tuple[tuple[int, int, torch.dtype, torch.device], Tensor, Tensor] | None
        self._lu_cache = None

    def map(self, x: Tensor) -> Tensor:
        """Apply :math:`W x + b` (no determinant)."""
        return F.linear(x, self.weight, self.bias)

    def logabsdet(self) -> Tensor:
        r"""Return :math:`\log|\det W|` through :func:`torch.linalg.slogdet`."""
        return torch.linalg.slogdet(self.weight)[1]

    def _lu(self) -> tuple[Tensor, Tensor]:
        weight = self.weight
        if weight.requires_grad:
            # A trainable weight may change without a version bump (fused optimizers such
            # as Adam(fused=True) update it in place without touching the counter), so its
            # factors are never cached; frozen weights (fitted models) are.
            self._lu_cache = None
            return self._factor(weight)
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if self._lu_cache is None or self._lu_cache[0] != key:
            self._lu_cache = (key, *self._factor(weight))
        return self._lu_cache[1], self._lu_cache[2]

    @staticmethod
    def _factor(weight: Tensor) -> tuple[Tensor, Tensor]:
        lu, pivots, info = torch.linalg.lu_factor_ex(weight.detach())
        if int(info.max()) > 0:
            raise FloatingPointError("Dense weight is singular: the layer cannot be inverted.")
        return lu, pivots

    def inverse(self, y: Tensor) -> Tensor:
        """Solve :math:`W x = y - b`.

        Without autograd through the weight, the LU factors cached for the current
        weight version are reused; otherwise :func:`torch.linalg.solve` keeps the graph.
        """
        rhs = y if self.bias is None else y - self.bias
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return torch.linalg.solve(self.weight, rhs.mT).mT
        lu, pivots = self._lu()
        return torch.linalg.lu_solve(lu, pivots, rhs.mT).mT

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state = dict(state)
        state["_lu_cache"] = None
        return state


class ActNorm(ConstantJacobianLayer):
    r"""Per-feature affine map :math:`y = x e^{s} + b` with data-dependent initialization.

    The first batch the layer transforms (in training mode) sets :math:`s` and :math:`b`
    so that this batch leaves the layer with zero mean and unit variance per feature.

    Parameters
    ----------
    features : int
        Dimension :math:`D`.

    Examples
    --------
    >>> layer = ActNorm(2).double()
    >>> y, _ = layer(torch.randn(64, 2, dtype=torch.float64) * 3 + 1)
    >>> bool(abs(y.mean()) < 1e-8)
    True
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.shift = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        std = x.std(dim=0) if x.shape[0] > 1 else torch.ones_like(x[0])
        log_scale = -torch.log(std.clamp_min(1e-6))
        self.log_scale.copy_(log_scale)
        self.shift.copy_(-x.mean(dim=0) * torch.exp(log_scale))
        self.initialized.fill_(True)

    def map(self, x: Tensor) -> Tensor:
        """Apply :math:`x e^{s} + b` (initializing from ``x`` on the first training call)."""
        if self.training and not bool(self.initialized):
            self._initialize(x.detach())
        return x * torch.exp(self.log_scale) + self.shift

    def logabsdet(self) -> Tensor:
        r"""Return :math:`\sum_j s_j`."""
        return self.log_scale.sum()

    def inverse(self, y: Tensor) -> Tensor:
        """Return :math:`(y - b) e^{-s}`."""
        return (y - self.shift) * torch.exp(-self.log_scale)


class Permutation(ConstantJacobianLayer):
    """Fixed permutation of the features (reversal by default); ``logabsdet`` is 0.

    Parameters
    ----------
    features : int
        Dimension :math:`D`.
    order : torch.Tensor, optional
        A permutation of ``range(features)``; defaults to the reversal.

    Examples
    --------
    >>> Permutation(3).map(torch.tensor([[1.0, 2.0, 3.0]]))
    tensor([[3., 2., 1.]])
    """

    def __init__(self, features: int, order: Tensor | None = None) -> None:
        super().__init__()
        order = torch.arange(features - 1, -1, -1) if order is None else order.long()
        if sorted(order.tolist()) != list(range(features)):
            raise ValueError("order must be a permutation of range(features).")
        self.register_buffer("order", order)
        self.register_buffer("inverse_order", torch.argsort(order))
        self.register_buffer("_zero", torch.zeros(()))

    def map(self, x: Tensor) -> Tensor:
        """Permute the features."""
        return x[:, self.order]

    def logabsdet(self) -> Tensor:
        """Return 0 (a permutation preserves volume)."""
        return self._zero

    def inverse(self, y: Tensor) -> Tensor:
        """Undo the permutation."""
        return y[:, self.inverse_order]


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
        :mod:`skebflow.jets` need them up to third order (the curvature of
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
