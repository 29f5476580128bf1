r"""Layers with a constant Jacobian (the set **C**): dense maps, ActNorm, permutations, whitening.

They enter the energy through ``map`` (no determinant) and the log-normalizer through
``logabsdet`` (:mod:`skebflow.nn._base`). The dense layer is a full, unconstrained
:math:`D \times D` matrix.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
.. [2] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
   Convolutions", NeurIPS 2018 (ActNorm).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skebflow.nn._base import ConstantJacobianLayer, Jet, TangentTape

__all__ = ["ActNorm", "Dense", "Permutation", "Whitening", "square_init"]


def square_init(n: int, init: str = "identity", generator: torch.Generator | None = None) -> Tensor:
    """Return an ``n × n`` float32 initial weight: the identity or a random rotation.

    Examples
    --------
    >>> w = square_init(3, "orthogonal", torch.Generator().manual_seed(0))
    >>> bool(torch.allclose(w @ w.T, torch.eye(3), atol=1e-6)), w.is_contiguous()
    (True, True)
    """
    if init == "identity":
        return torch.eye(n)
    if init == "orthogonal":
        gaussian = torch.randn(n, n, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # The QR factor is column-major (strides (1, D)); a parameter keeps its layout,
        # and fused optimizers assume that a gradient has its parameter's layout, so
        # every parameter is created row-major (see skebflow.training._trainer.train_step).
        return (q * torch.sign(torch.diagonal(r))).float().contiguous()
    raise ValueError(f"init must be 'identity' or 'orthogonal', got {init!r}.")


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
        self.weight = nn.Parameter(square_init(features, init, generator))
        self.bias = nn.Parameter(torch.zeros(features)) if bias else None
        self._lu_cache: (
            tuple[tuple[int, int, torch.dtype, torch.device], Tensor, Tensor, Tensor] | None
        )
        self._lu_cache = None

    def map(self, x: Tensor) -> Tensor:
        """Apply :math:`W x + b` (no determinant)."""
        return F.linear(x, self.weight, self.bias)

    def logabsdet(self) -> Tensor:
        r"""Return :math:`\log|\det W|`.

        Under autograd through the weight it comes from :func:`torch.linalg.slogdet`;
        otherwise from the diagonal of the LU factors of :meth:`factors`, which a frozen
        weight caches, so that a later :meth:`inverse` or a singular-value search
        (:class:`~skebflow.objectives._regularizers.SingularValueBarrier`) reuses them.
        ``-inf`` for a singular weight.
        """
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return torch.linalg.slogdet(self.weight)[1]
        lu, _, info = self.factors()
        if int(info.max()) > 0:
            return torch.full((), -math.inf, dtype=lu.dtype, device=lu.device)
        return torch.diagonal(lu).abs().log().sum()

    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``torch.linalg.lu_factor_ex`` of the weight: ``(LU, pivots, info)``.

        Cached per version of a frozen weight (the EMA copy, a fitted model). A trainable
        weight may change without a version bump (fused optimizers such as
        ``Adam(fused=True)`` update it in place without touching the counter), so its
        factors are never cached.
        """
        weight = self.weight
        if weight.requires_grad:
            self._lu_cache = None
            return torch.linalg.lu_factor_ex(weight.detach())
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if self._lu_cache is None or self._lu_cache[0] != key:
            self._lu_cache = (key, *torch.linalg.lu_factor_ex(weight.detach()))
        return self._lu_cache[1], self._lu_cache[2], self._lu_cache[3]

    def barrier_matrix(self) -> Tensor:
        """Return the weight, whose singular values the barrier watches."""
        return self.weight

    def barrier_apply(self, columns: Tensor) -> Tensor:
        """Return ``W @ columns``."""
        return self.weight @ columns

    def cached_factors(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """Return the factors cached for the current weight, or ``None`` (computes nothing)."""
        weight, cache = self.weight, self._lu_cache
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if weight.requires_grad or cache is None or cache[0] != key:
            return None
        return cache[1], cache[2], cache[3]

    def _lu(self) -> tuple[Tensor, Tensor]:
        lu, pivots, info = self.factors()
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

    def jet(self, x: Tensor, dx: Tensor, ddx: Tensor | None) -> tuple[Jet, None]:
        """Affine rule with one product for the primal and every tangent.

        One weight-gradient product in the backward pass instead of one per stream, and
        no D × D sum of their contributions.
        """
        streams = [x, dx.reshape(-1, dx.shape[-1])]
        if ddx is not None:
            streams.append(ddx.reshape(-1, ddx.shape[-1]))
        out = F.linear(torch.cat(streams), self.weight)
        parts = out.split([stream.shape[0] for stream in streams])
        y = parts[0] if self.bias is None else parts[0] + self.bias
        dy = parts[1].reshape(*dx.shape[:-1], out.shape[-1])
        ddy = None if ddx is None else parts[2].reshape(*ddx.shape[:-1], out.shape[-1])
        return (y, dy, ddy), None

    def tangent(self, x: Tensor, dx: Tensor, tape: TangentTape) -> tuple[Tensor, Tensor]:
        """Primal and tangents through one custom product (:class:`_DenseStreams`)."""
        flat = dx.reshape(-1, dx.shape[-1])
        y, dy = _DenseStreams.apply(self.weight, x, flat, x is tape.point, tape)
        y = y if self.bias is None else y + self.bias
        return y, dy.reshape(*dx.shape[:-1], dy.shape[-1])

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state = dict(state)
        state["_lu_cache"] = None
        return state


class _DenseStreams(torch.autograd.Function):
    """``(x Wᵀ, dx Wᵀ)`` with a backward that computes only what it is asked for.

    The primal ``x`` and the tangents ``dx`` share one weight-gradient product
    ``[g; dg]ᵀ [x; dx]`` (no D × D sum of two contributions). The score's reverse pass
    differentiates the energy, which does not depend on the tangents: it gets no tangent
    gradient, so no product is spent on it, and no weight gradient (the parameters are
    differentiated later, through the whole loss). The backward is made of differentiable
    operations, so it can itself be differentiated (``create_graph=True``). With
    ``score_input=True`` ``x`` is the point at which the score is taken: its gradient is
    computed in the score's reverse pass only, never when the loss is differentiated.
    ``tape.score_pass`` tells the two apart (carried in the autograd context, not in
    thread-local state: on accelerators backward functions run on device threads). The
    context keeps the tape's :class:`~skebflow.nn._base.PassFlag`, not the tape, whose
    tensors lead back to the context (a cycle the collector cannot free).
    """

    @staticmethod
    def forward(
        ctx: object, weight: Tensor, x: Tensor, dx: Tensor, score_input: bool, tape: TangentTape
    ) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(weight, x, dx)
        ctx.set_materialize_grads(False)
        ctx.score_input, ctx.flag = score_input, tape.flag
        return F.linear(x, weight), F.linear(dx, weight)

    @staticmethod
    def backward(
        ctx: object, grad_y: Tensor | None, grad_dy: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        weight, x, dx = ctx.saved_tensors
        need_weight, need_x, need_dx, _, _ = ctx.needs_input_grad
        input_only = ctx.flag.score_pass
        need_x = need_x and (input_only or not ctx.score_input)
        grad_x = grad_y @ weight if need_x and grad_y is not None else None
        grad_dx = grad_dy @ weight if need_dx and grad_dy is not None else None
        grad_weight = None
        if need_weight and not input_only:
            pairs = [(g, v) for g, v in ((grad_y, x), (grad_dy, dx)) if g is not None]
            if pairs:
                grads, values = zip(*pairs, strict=True)
                grad_weight = torch.cat(grads).mT @ torch.cat(values)
        return grad_weight, grad_x, grad_dx, None, None


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


class Whitening(ConstantJacobianLayer):
    r"""A fixed whitening map :math:`u = W (x - m)`, fitted to data, never trained.

    ``fit`` sets :math:`m` to the data's mean and :math:`W = V \Lambda^{-1/2} V^\top`
    from the eigendecomposition :math:`\Sigma = V \Lambda V^\top` of their covariance
    (the ZCA whitening, the symmetric one: for uncorrelated standardized data it is the
    identity), each eigenvalue floored at ``min_variance`` times their mean, so that a
    (nearly) degenerate direction is scaled up by at most ``min_variance ** -0.5``. The
    weight, its inverse and :math:`\log|\det W|` are buffers: no optimizer moves them,
    and a model file keeps them.

    A flow that starts with this layer is trained in the whitened coordinates: every
    objective of ``skebflow.objectives.bind_objective`` measures its loss on the
    flow's remaining layers at :math:`u` (``EnergyFlow.after_whitening``). Score
    matching is not invariant to linear maps of the data, and on correlated tables it
    trains far better in whitened coordinates; maximum likelihood is invariant (the
    layer adds the constant :math:`\log|\det W|`).

    Parameters
    ----------
    features : int
        Dimension :math:`D`. The layer starts as the identity.

    Examples
    --------
    >>> x = torch.randn(500, 2, dtype=torch.float64) @ torch.tensor([[2.0, 0.0], [1.5, 0.5]],
    ...                                                             dtype=torch.float64)
    >>> layer = Whitening(2).double().fit(x)
    >>> u = layer.map(x)
    >>> bool(torch.allclose(u.T.cov(), torch.eye(2, dtype=torch.float64), atol=1e-8))
    True
    >>> bool(torch.allclose(layer.inverse(u), x))
    True
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("weight", torch.eye(features))
        self.register_buffer("inverse_weight", torch.eye(features))
        self.register_buffer("log_det", torch.zeros(()))

    @torch.no_grad()
    def fit(
        self,
        x: Tensor,
        *,
        min_variance: float = 1e-4,
        noise: float = 0.0,
        covariance: Tensor | None = None,
    ) -> Whitening:
        """Fit the map to the rows of ``x`` (at least 2); return ``self``.

        Parameters
        ----------
        x : Tensor of shape (n, D)
            The data, in the units the flow sees.
        min_variance : float, default=1e-4
            Floor of the eigenvalues of the covariance, relative to their mean.
        noise : float, default=0.0
            Standard deviation of Gaussian noise that training adds to every batch (its
            variance is added to the covariance).
        covariance : Tensor of shape (D, D), optional
            An estimate of the covariance of ``x`` to use instead of the sample
            covariance (a shrunk one where the rows are few for ``D``).
        """
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0] or x.shape[0] < 2:
            raise ValueError(
                f"Whitening of {self.mean.shape[0]} features needs at least 2 rows of "
                f"{self.mean.shape[0]} features, got shape {tuple(x.shape)}."
            )
        x64 = x.to(torch.float64)
        if covariance is None:
            covariance = torch.cov(x64.T).reshape(x.shape[1], x.shape[1])
        covariance = covariance.to(device=x.device, dtype=torch.float64)
        eye = torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
        eigenvalues, vectors = torch.linalg.eigh(covariance + noise**2 * eye)
        scale = eigenvalues.mean().clamp_min(torch.finfo(torch.float64).tiny)
        eigenvalues = eigenvalues.clamp_min(min_variance * scale)
        root = eigenvalues.sqrt()
        self.mean.copy_(x64.mean(dim=0))
        self.weight.copy_((vectors / root) @ vectors.T)
        self.inverse_weight.copy_((vectors * root) @ vectors.T)
        self.log_det.copy_(-root.log().sum())
        return self

    def map(self, x: Tensor) -> Tensor:
        """Apply :math:`W (x - m)` (no determinant is computed)."""
        return F.linear(x - self.mean, self.weight)

    def logabsdet(self) -> Tensor:
        r"""Return :math:`\log|\det W|`, fixed when the layer was fitted."""
        return self.log_det

    def inverse(self, y: Tensor) -> Tensor:
        """Return :math:`W^{-1} u + m`."""
        return F.linear(y, self.inverse_weight) + self.mean
