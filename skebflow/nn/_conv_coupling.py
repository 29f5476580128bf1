r"""The affine coupling of image flows, with a smooth convolutional conditioner.

A :class:`ConvAffineCoupling` keeps one group of channels and moves the other by a
per-entry scale and shift computed from the first group by a small convolutional network
(Glow's coupling [2]_). Its log-determinant is the sum of the log-scales and depends on
the input: the layer belongs to the set **N** of the EBFlow paper [1]_, so it is part of
the energy. The conditioner's activations are smooth, so the energy is twice
differentiable, as score matching needs.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
.. [2] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
   Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from skebflow.nn._base import Layer

__all__ = ["ConvAffineCoupling", "smooth_conv_net"]


def _init_conv_(conv: nn.Conv2d, generator: torch.Generator | None, zero: bool) -> None:
    """Uniform weights of bound ``1/sqrt(fan_in)`` drawn from ``generator``, or zeros."""
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    with torch.no_grad():
        for tensor in (conv.weight, conv.bias):
            if zero:
                tensor.zero_()
            else:
                noise = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                tensor.copy_((2.0 * noise - 1.0) / fan_in**0.5)


def smooth_conv_net(
    in_channels: int,
    out_channels: int,
    hidden_channels: int,
    activation: Callable[[], nn.Module],
    generator: torch.Generator | None,
) -> nn.Sequential:
    """Build conv 3×3 → act → conv 1×1 → act → conv 3×3, same padding; the last conv is zero.

    Weights come from ``generator`` (never the global generator); the zero last layer
    makes a coupling start at the identity.

    Examples
    --------
    >>> net = smooth_conv_net(2, 4, 8, nn.SiLU, torch.Generator().manual_seed(0))
    >>> net(torch.randn(3, 2, 5, 5)).abs().max().item()
    0.0
    """
    device = torch.get_default_device()  # skip_init would build on the CPU under "meta"
    convs = [
        nn.utils.skip_init(nn.Conv2d, in_channels, hidden_channels, 3, padding=1, device=device),
        nn.utils.skip_init(nn.Conv2d, hidden_channels, hidden_channels, 1, device=device),
        nn.utils.skip_init(nn.Conv2d, hidden_channels, out_channels, 3, padding=1, device=device),
    ]
    for index, conv in enumerate(convs):
        _init_conv_(conv, generator, zero=index == len(convs) - 1)
    return nn.Sequential(convs[0], activation(), convs[1], activation(), convs[2])


class ConvAffineCoupling(Layer):
    r"""Channel-wise affine coupling :math:`y_B = x_B e^{s(x_A)} + t(x_A)`, :math:`y_A = x_A`.

    With ``parity=0`` the first :math:`\lfloor C/2 \rfloor` channels are :math:`A`, with
    ``parity=1`` the last ones. The log-scale is bounded smoothly, :math:`s = c
    \tanh(\tilde s / c)` with :math:`c` = ``scale_bound``; the conditioner
    (:func:`smooth_conv_net`) starts at zero, so the coupling starts as the identity.

    Parameters
    ----------
    channels : int
        :math:`C \ge 2`.
    parity : int, default=0
        Which group conditions the other.
    hidden_channels : int, default=64
        Width of the conditioner.
    activation : callable, default=torch.nn.SiLU
        Constructor of the (smooth) activation.
    scale_bound : float, default=3.0
        Bound on the absolute log-scale.
    generator : torch.Generator, optional
        Source of the conditioner's initial weights.

    Examples
    --------
    >>> layer = ConvAffineCoupling(4, hidden_channels=8).double()
    >>> x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    >>> y, ladj = layer(x)
    >>> torch.allclose(layer.inverse(y), x), ladj.shape
    (True, torch.Size([3]))
    """

    def __init__(
        self,
        channels: int,
        *,
        parity: int = 0,
        hidden_channels: int = 64,
        activation: Callable[[], nn.Module] = nn.SiLU,
        scale_bound: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"ConvAffineCoupling needs at least 2 channels, got {channels}.")
        self.channels = int(channels)
        half = self.channels // 2
        # (start, length) of the conditioning group A and of the moved group B.
        if parity % 2 == 0:
            self._cond, self._trans = (0, half), (half, self.channels - half)
        else:
            self._trans, self._cond = (0, self.channels - half), (self.channels - half, half)
        self.net = smooth_conv_net(
            half, 2 * self._trans[1], int(hidden_channels), activation, generator
        )
        self.scale_bound = float(scale_bound)

    def _params(self, x_cond: Tensor) -> tuple[Tensor, Tensor]:
        raw_scale, shift = self.net(x_cond).chunk(2, dim=1)
        return self.scale_bound * torch.tanh(raw_scale / self.scale_bound), shift

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.narrow(1, *self._cond), x.narrow(1, *self._trans)

    def _join(self, cond: Tensor, trans: Tensor) -> Tensor:
        pieces = [cond, trans] if self._cond[0] == 0 else [trans, cond]
        return torch.cat(pieces, dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(y, sum(s(x_A)))``."""
        x_cond, x_trans = self._parts(x)
        log_scale, shift = self._params(x_cond)
        y_trans = x_trans * torch.exp(log_scale) + shift
        return self._join(x_cond, y_trans), log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        """Closed-form inverse: :math:`x_B = (y_B - t(y_A)) e^{-s(y_A)}`."""
        y_cond, y_trans = self._parts(y)
        log_scale, shift = self._params(y_cond)
        return self._join(y_cond, (y_trans - shift) * torch.exp(-log_scale))
