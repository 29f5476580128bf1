"""Volume-preserving and per-channel layers of image flows: squeeze, reshape, ActNorm.

* :class:`Squeeze` moves each 2×2 patch into the channels (a permutation).
* :class:`Reshape` turns flat rows ``(n, D)`` into images ``(n, C, H, W)`` in C·H·W order
  (the first layer of the estimator's image flows).
* :class:`ActNorm2d` is Glow's per-channel ActNorm.

All are constant-Jacobian layers: they enter the log-normalizer only.

References
----------
.. [1] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
   Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from skebflow.nn._base import ConstantJacobianLayer
from skebflow.nn._conv import check_event
from skebflow.nn._linear import ActNorm

__all__ = ["ActNorm2d", "Reshape", "Squeeze"]


class Squeeze(ConstantJacobianLayer):
    """Space-to-depth: each 2×2 patch of every channel becomes 4 channels.

    ``(C, H, W) -> (4C, H/2, W/2)``; output channel ``4c + 2i + j`` holds the pixel
    ``(2h + i, 2w + j)`` of channel ``c``. A permutation: ``logabsdet`` is 0.

    Examples
    --------
    >>> layer = Squeeze()
    >>> layer.output_shape((1, 4, 4))
    (4, 2, 2)
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> layer.map(x)[0, :, 0, 0].tolist()
    [0.0, 1.0, 4.0, 5.0]
    >>> torch.equal(layer.inverse(layer.map(x)), x)
    True
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_zero", torch.zeros(()))

    def output_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return ``(4C, H/2, W/2)``; ``H`` and ``W`` must be even."""
        if len(event_shape) != 3 or event_shape[1] % 2 or event_shape[2] % 2:
            raise ValueError(
                f"Squeeze needs events (C, H, W) with H and W even, got {tuple(event_shape)}."
            )
        c, h, w = event_shape
        return (4 * c, h // 2, w // 2)

    def map(self, x: Tensor) -> Tensor:
        """Move each 2×2 patch into the channels."""
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(n, 4 * c, h // 2, w // 2)

    def _linear_part(self, tangents: Tensor, like: Tensor) -> Tensor:
        out = self.map(tangents.reshape(-1, *tangents.shape[2:]))
        return out.reshape(*tangents.shape[:2], *out.shape[1:])

    def logabsdet(self) -> Tensor:
        """Return 0 (a permutation)."""
        return self._zero

    def inverse(self, y: Tensor) -> Tensor:
        """Move the channels back into 2×2 patches."""
        n, c4, h, w = y.shape
        y = y.reshape(n, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c4 // 4, 2 * h, 2 * w)


class Reshape(ConstantJacobianLayer):
    """Reshape flat events ``(D,)`` into images ``(C, H, W)`` in C-order (row-major).

    Entry ``c * H * W + h * W + w`` of a row becomes pixel ``(c, h, w)``, as
    ``numpy.reshape`` and :meth:`torch.Tensor.reshape` read it. A relabelling of the
    coordinates: ``logabsdet`` is 0, and :meth:`inverse` flattens. Put first in an image
    flow, it lets the flow (its energy, scores, ``inverse`` and ``sample``) work on flat
    rows ``(n, D)``.

    Parameters
    ----------
    shape : tuple of int
        The image shape ``(C, H, W)`` (any event shape works).

    Examples
    --------
    >>> layer = Reshape((1, 2, 3))
    >>> layer.output_shape((6,))
    (1, 2, 3)
    >>> x = torch.arange(12.0).reshape(2, 6)
    >>> layer.map(x).shape
    torch.Size([2, 1, 2, 3])
    >>> torch.equal(layer.inverse(layer.map(x)), x)
    True
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(size) for size in shape)
        self.register_buffer("_zero", torch.zeros(()))

    def output_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return :attr:`shape`; ``event_shape`` must be ``(D,)`` with ``D`` its size."""
        if tuple(event_shape) != (math.prod(self.shape),):
            raise ValueError(
                f"Reshape to {self.shape} needs flat events of shape "
                f"({math.prod(self.shape)},), got {tuple(event_shape)}."
            )
        return self.shape

    def map(self, x: Tensor) -> Tensor:
        """Reshape ``(n, D)`` to ``(n, *shape)``."""
        return x.reshape(x.shape[0], *self.shape)

    def _linear_part(self, tangents: Tensor, like: Tensor) -> Tensor:
        return tangents.reshape(*tangents.shape[:2], *self.shape)

    def logabsdet(self) -> Tensor:
        """Return 0 (a relabelling of the coordinates)."""
        return self._zero

    def inverse(self, y: Tensor) -> Tensor:
        """Flatten ``(n, *shape)`` to ``(n, D)``."""
        return y.reshape(y.shape[0], -1)


class ActNorm2d(ActNorm):
    r"""Per-channel ActNorm of image events, :math:`y_c = x_c e^{s_c} + b_c` (Glow).

    The first training batch sets :math:`s, b` so that every channel leaves the layer
    with zero mean and unit variance over the batch and the positions. The log-determinant
    is :math:`HW \sum_c s_c`.

    Parameters
    ----------
    channels : int
        :math:`C`.
    spatial_shape : tuple of int
        ``(H, W)`` of the events.

    Examples
    --------
    >>> layer = ActNorm2d(2, (3, 3)).double()
    >>> y = layer.map(3 * torch.randn(16, 2, 3, 3, dtype=torch.float64) + 1)
    >>> bool(y.mean((0, 2, 3)).abs().max() < 1e-8)
    True
    """

    def __init__(self, channels: int, spatial_shape: tuple[int, int]) -> None:
        super().__init__(channels)
        self.channels = int(channels)
        self.spatial_shape = (int(spatial_shape[0]), int(spatial_shape[1]))

    def output_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Check that ``event_shape`` is ``(C, H, W)`` and return it."""
        check_event(self, (self.channels, *self.spatial_shape), event_shape)
        return tuple(event_shape)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        values = x.movedim(1, 0).reshape(self.channels, -1)
        std = values.std(dim=1) if values.shape[1] > 1 else torch.ones_like(values[:, 0])
        log_scale = -torch.log(std.clamp_min(1e-6))
        self.log_scale.copy_(log_scale)
        self.shift.copy_(-values.mean(dim=1) * torch.exp(log_scale))
        self.initialized.fill_(True)

    def map(self, x: Tensor) -> Tensor:
        """Apply the per-channel affine map (initializing on the first training call)."""
        if self.training and not bool(self.initialized):
            self._initialize(x.detach())
        return x * torch.exp(self.log_scale).reshape(-1, 1, 1) + self.shift.reshape(-1, 1, 1)

    def _linear_part(self, tangents: Tensor, like: Tensor) -> Tensor:
        return tangents * torch.exp(self.log_scale).reshape(-1, 1, 1)

    def logabsdet(self) -> Tensor:
        r"""Return :math:`HW \sum_c s_c`."""
        return math.prod(self.spatial_shape) * self.log_scale.sum()

    def inverse(self, y: Tensor) -> Tensor:
        """Return :math:`(y - b) e^{-s}` per channel."""
        shift, log_scale = self.shift.reshape(-1, 1, 1), self.log_scale.reshape(-1, 1, 1)
        return (y - shift) * torch.exp(-log_scale)
