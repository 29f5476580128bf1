r"""Constant-Jacobian layers of image flows: convolutions and 1×1 convolutions.

Every layer here acts on events of shape ``(C, H, W)`` and is linear (affine with its
bias), so it belongs to the set **C** of the EBFlow paper [1]_: the energy applies its
``map`` only, and its log-determinant enters the log-normalizer alone.

* :class:`Conv2d` is a same-padded :math:`C \to C` convolution with an unconstrained
  kernel. Its Jacobian is the :math:`D \times D` matrix :math:`A` (:math:`D = CHW`,
  :func:`conv_operator`), built exactly from the kernel and factorized by LU.
* :class:`Conv1x1` is Glow's invertible 1×1 convolution [2]_ with an unconstrained
  :math:`C \times C` weight: :math:`\log|\det| = HW \log|\det W|`.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
.. [2] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
   Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skebflow.nn._base import ConstantJacobianLayer
from skebflow.nn._linear import square_init

__all__ = ["Conv1x1", "Conv2d", "check_event", "conv_operator"]

_Key = tuple[int, int, torch.dtype, torch.device]


def check_event(layer: nn.Module, expected: tuple[int, ...], event_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``event_shape`` is the ``expected`` one of ``layer``."""
    if tuple(event_shape) != expected:
        raise ValueError(
            f"{type(layer).__name__} was built for events of shape {expected}, "
            f"got {tuple(event_shape)}."
        )


def _diagonal_views(
    matrix: Tensor, channels: int, height: int, width: int, pad: int
) -> list[tuple[int, int, Tensor]]:
    """Return views of the ``(C, H, W, C, H, W)`` operator, one per kernel offset ``(i, j)``.

    The view for offset ``(a, b) = (i - pad, j - pad)`` has shape ``(C, C, H - |a|, W - |b|)``
    and holds the entries ``A[o, h, w, c, h + a, w + b]``, which all equal ``K[o, c, i, j]``.
    """
    s = matrix.stride()
    views = []
    for i in range(2 * pad + 1):
        a = i - pad
        rows = height - abs(a)
        for j in range(2 * pad + 1):
            b = j - pad
            cols = width - abs(b)
            if rows <= 0 or cols <= 0:
                continue
            h0, w0 = max(0, -a), max(0, -b)
            offset = h0 * s[1] + w0 * s[2] + (h0 + a) * s[4] + (w0 + b) * s[5]
            view = matrix.as_strided(
                (channels, channels, rows, cols),
                (s[0], s[3], s[1] + s[4], s[2] + s[5]),
                matrix.storage_offset() + offset,
            )
            views.append((i, j, view))
    return views


class _ConvOperator(torch.autograd.Function):
    """Kernel → operator, with the adjoint (sums along the diagonals) as its backward."""

    @staticmethod
    def forward(ctx: object, weight: Tensor, height: int, width: int) -> Tensor:
        channels, pad = weight.shape[0], weight.shape[-1] // 2
        ctx.shape = (channels, height, width, pad)
        matrix = weight.new_zeros(channels, height, width, channels, height, width)
        for i, j, view in _diagonal_views(matrix, channels, height, width, pad):
            view.copy_(weight[:, :, i, j, None, None].expand_as(view))
        d = channels * height * width
        return matrix.reshape(d, d)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None, None]:
        channels, height, width, pad = ctx.shape
        grad = grad.contiguous().reshape(channels, height, width, channels, height, width)
        size = 2 * pad + 1
        grad_weight = grad.new_zeros(channels, channels, size, size)
        for i, j, view in _diagonal_views(grad, channels, height, width, pad):
            grad_weight[:, :, i, j] = view.sum((2, 3))
        return grad_weight, None, None


def conv_operator(weight: Tensor, spatial_shape: tuple[int, int]) -> Tensor:
    r"""Return the :math:`D \times D` matrix of a same-padded, bias-free convolution.

    Row ``(o, h, w)`` and column ``(c, h', w')`` (C-order flattening of ``(C, H, W)``) hold
    ``K[o, c, h' - h + p, w' - w + p]`` where that index lies in the kernel (``p = k // 2``),
    else 0: the exact Jacobian of :func:`torch.nn.functional.conv2d` with zero padding
    ``p``. It is written along the kernel's diagonals in :math:`O(D^2)` (no convolution of
    an identity basis), and differentiable in ``weight``.

    Parameters
    ----------
    weight : Tensor of shape (C, C, k, k)
        The kernel, ``k`` odd.
    spatial_shape : tuple of int
        ``(H, W)``.

    Returns
    -------
    Tensor of shape (D, D)

    Examples
    --------
    >>> weight = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    >>> x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    >>> matrix = conv_operator(weight, (4, 5))
    >>> torch.allclose(matrix @ x.flatten(), F.conv2d(x, weight, padding=1).flatten())
    True
    """
    height, width = spatial_shape
    return _ConvOperator.apply(weight, int(height), int(width))


class _FactorCache(abc.ABC):
    """LU factors of a frozen weight's matrix, cached per weight version (as in ``Dense``).

    A trainable weight may change without a version bump (fused optimizers), so its
    factors are never cached.
    """

    def _init_cache(self) -> None:
        self._lu_cache: tuple[_Key, Tensor, Tensor, Tensor] | None = None

    @abc.abstractmethod
    def _matrix(self) -> Tensor:
        """Return the layer's matrix (differentiable in its weight)."""

    def barrier_matrix(self) -> Tensor:
        """Return the matrix whose singular values the barrier watches (differentiable)."""
        return self._matrix()

    def barrier_apply(self, columns: Tensor) -> Tensor:
        """Return :meth:`barrier_matrix` ``@ columns`` (``columns`` of shape ``(m, k)``)."""
        return self._matrix() @ columns

    def cached_factors(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """Return the factors cached for the current weight, or ``None`` (computes nothing)."""
        weight, cache = self.weight, self._lu_cache
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if weight.requires_grad or cache is None or cache[0] != key:
            return None
        return cache[1], cache[2], cache[3]

    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``torch.linalg.lu_factor_ex`` of the layer's matrix: ``(LU, pivots, info)``."""
        weight = self.weight
        if weight.requires_grad:
            self._lu_cache = None
            with torch.no_grad():
                return torch.linalg.lu_factor_ex(self._matrix())
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if self._lu_cache is None or self._lu_cache[0] != key:
            with torch.no_grad():
                self._lu_cache = (key, *torch.linalg.lu_factor_ex(self._matrix()))
        return self._lu_cache[1], self._lu_cache[2], self._lu_cache[3]

    def _logabsdet_matrix(self) -> Tensor:
        """``log|det|`` of :meth:`_matrix`: differentiable under autograd, else cached LU."""
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return torch.linalg.slogdet(self._matrix())[1]
        lu, _, info = self.factors()
        if int(info.max()) > 0:
            return torch.full((), -math.inf, dtype=lu.dtype, device=lu.device)
        return torch.diagonal(lu).abs().log().sum()

    def _solve(self, rhs: Tensor) -> Tensor:
        """Solve ``M x = rhs`` for the columns of ``rhs``."""
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return torch.linalg.solve(self._matrix(), rhs)
        lu, pivots, info = self.factors()
        if int(info.max()) > 0:
            raise FloatingPointError(f"{type(self).__name__} is singular: it cannot be inverted.")
        return torch.linalg.lu_solve(lu, pivots, rhs)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["_lu_cache"] = None
        return state


class Conv2d(_FactorCache, ConstantJacobianLayer):
    r"""Same-padded :math:`C \to C` convolution with bias and an unconstrained kernel.

    :math:`y = K * x + b` with zero padding ``k // 2``. Its Jacobian is the constant
    :math:`D \times D` matrix of :func:`conv_operator`; :meth:`logabsdet` factorizes it
    exactly (:math:`O(D^3)`, the log-normalizer only), and :meth:`inverse` solves with its
    LU factors, cached per version of a frozen kernel. The kernel starts at the identity
    (a centred delta).

    Parameters
    ----------
    channels : int
        :math:`C`.
    spatial_shape : tuple of int
        ``(H, W)`` of the events (the determinant depends on it).
    kernel_size : int, default=3
        Odd kernel size ``k``.
    bias : bool, default=True
        Whether to add a learnable per-channel bias.

    Examples
    --------
    >>> layer = Conv2d(2, (3, 3)).double()
    >>> with torch.no_grad():
    ...     _ = layer.weight.add_(0.1 * torch.randn(2, 2, 3, 3, dtype=torch.float64))
    >>> x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    >>> torch.allclose(layer.inverse(layer.map(x)), x)
    True
    >>> exact = torch.linalg.slogdet(conv_operator(layer.weight, (3, 3)))[1]
    >>> torch.allclose(layer.logabsdet(), exact)
    True
    """

    def __init__(
        self,
        channels: int,
        spatial_shape: tuple[int, int],
        *,
        kernel_size: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        self.channels, self.kernel_size = int(channels), int(kernel_size)
        self.spatial_shape = (int(spatial_shape[0]), int(spatial_shape[1]))
        weight = torch.zeros(channels, channels, kernel_size, kernel_size)
        weight[:, :, kernel_size // 2, kernel_size // 2] = torch.eye(channels)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self._init_cache()

    def output_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Check that ``event_shape`` is ``(C, H, W)`` and return it."""
        check_event(self, (self.channels, *self.spatial_shape), event_shape)
        return tuple(event_shape)

    def map(self, x: Tensor) -> Tensor:
        """Apply the convolution and the bias (no determinant)."""
        return F.conv2d(x, self.weight, self.bias, padding=self.kernel_size // 2)

    def _linear_part(self, tangents: Tensor, like: Tensor) -> Tensor:
        flat = tangents.reshape(-1, *tangents.shape[2:])
        out = F.conv2d(flat, self.weight, padding=self.kernel_size // 2)
        return out.reshape(tangents.shape)

    def _matrix(self) -> Tensor:
        return conv_operator(self.weight, self.spatial_shape)

    def barrier_apply(self, columns: Tensor) -> Tensor:
        """Return ``A @ columns`` by convolving the columns as images (``A`` never built)."""
        k = columns.shape[1]
        images = columns.mT.reshape(k, self.channels, *self.spatial_shape)
        out = F.conv2d(images, self.weight, padding=self.kernel_size // 2)
        return out.reshape(k, -1).mT

    def operator(self) -> Tensor:
        r"""Return the Jacobian, the :math:`D \times D` matrix of :func:`conv_operator`."""
        return self._matrix()

    def logabsdet(self) -> Tensor:
        r"""Return :math:`\log|\det A|`, exact (``-inf`` for a singular operator).

        Under autograd through the kernel it comes from :func:`torch.linalg.slogdet` of
        the operator; otherwise from the LU factors of :meth:`factors`, cached for a
        frozen kernel so that a later :meth:`inverse` reuses them.
        """
        return self._logabsdet_matrix()

    def inverse(self, y: Tensor) -> Tensor:
        """Solve :math:`A x = y - b` with the (cached) LU factors of the operator."""
        if self.bias is not None:
            y = y - self.bias.reshape(-1, 1, 1)
        return self._solve(y.flatten(1).mT).mT.reshape(y.shape)


class Conv1x1(_FactorCache, ConstantJacobianLayer):
    r"""Glow's invertible 1×1 convolution with an unconstrained :math:`C \times C` weight.

    :math:`y_{:, h, w} = W x_{:, h, w}` at every position, so :math:`\log|\det| = HW
    \log|\det W|`; no LU parameterization. The inverse solves with LU factors of
    :math:`W`, cached per version of a frozen weight.

    Parameters
    ----------
    channels : int
        :math:`C`.
    spatial_shape : tuple of int
        ``(H, W)`` of the events.
    init : {"orthogonal", "identity"}, default="orthogonal"
        Initial weight; ``"orthogonal"`` draws a random rotation from ``generator``.
    bias : bool, default=False
        Whether to add a learnable per-channel bias (Glow has none: ActNorm shifts).
    generator : torch.Generator, optional
        Source of the random rotation.

    Examples
    --------
    >>> layer = Conv1x1(3, (2, 2), generator=torch.Generator().manual_seed(0)).double()
    >>> x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    >>> torch.allclose(layer.inverse(layer.map(x)), x)
    True
    """

    def __init__(
        self,
        channels: int,
        spatial_shape: tuple[int, int],
        *,
        init: str = "orthogonal",
        bias: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.channels = int(channels)
        self.spatial_shape = (int(spatial_shape[0]), int(spatial_shape[1]))
        self.weight = nn.Parameter(square_init(channels, init, generator))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self._init_cache()

    def output_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Check that ``event_shape`` is ``(C, H, W)`` and return it."""
        check_event(self, (self.channels, *self.spatial_shape), event_shape)
        return tuple(event_shape)

    def map(self, x: Tensor) -> Tensor:
        """Mix the channels at every position (no determinant)."""
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)

    def _linear_part(self, tangents: Tensor, like: Tensor) -> Tensor:
        flat = tangents.reshape(-1, *tangents.shape[2:])
        return F.conv2d(flat, self.weight[:, :, None, None]).reshape(tangents.shape)

    def _matrix(self) -> Tensor:
        return self.weight

    def logabsdet(self) -> Tensor:
        r"""Return :math:`HW \log|\det W|` (``-inf`` for a singular weight)."""
        return math.prod(self.spatial_shape) * self._logabsdet_matrix()

    def inverse(self, y: Tensor) -> Tensor:
        """Solve :math:`W x = y - b` at every position."""
        if self.bias is not None:
            y = y - self.bias.reshape(-1, 1, 1)
        columns = y.movedim(1, 0).reshape(self.channels, -1)
        return self._solve(columns).reshape(self.channels, y.shape[0], *y.shape[2:]).movedim(0, 1)
