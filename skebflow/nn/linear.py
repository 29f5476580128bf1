r"""Layers with a constant Jacobian (the set **C**): dense maps, ActNorm, permutations.

They enter the energy through ``map`` (no determinant) and the log-normalizer through
``logabsdet`` (:mod:`skebflow.nn.base`). The dense layer is a full, unconstrained
:math:`D \times D` matrix.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
.. [2] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
   Convolutions", NeurIPS 2018 (ActNorm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skebflow.nn.base import ConstantJacobianLayer

__all__ = ["ActNorm", "Dense", "Permutation"]


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
            # every parameter is created row-major (see skebflow.training.trainer.train_step).
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
