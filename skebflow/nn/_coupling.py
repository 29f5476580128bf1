"""Affine coupling layers with smooth conditioners (the nonlinear layers of ``"coupling"``).

An :class:`AffineCoupling` keeps half of the features and moves the other half by a scale
and a shift computed from the first half by a small MLP. Its Jacobian is triangular, so its
log-determinant is the sum of the log-scales; it depends on the input, so the layer belongs
to the set **N** of the EBFlow paper [1]_ and its log-determinant is part of the energy.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
.. [2] L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP",
   ICLR 2017 (affine coupling).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from skebflow.nn._base import Layer

__all__ = ["AffineCoupling", "smooth_mlp"]


def smooth_mlp(
    in_features: int,
    out_features: int,
    hidden_features: tuple[int, ...],
    activation: Callable[[], nn.Module],
    generator: torch.Generator | None,
) -> nn.Sequential:
    """Build an MLP whose weights come from ``generator`` (never the global generator).

    Hidden layers use PyTorch's default uniform bound 1/sqrt(fan_in); the last layer is
    zero so that the conditioner starts at the identity coupling.
    """
    sizes = (in_features, *hidden_features, out_features)
    modules: list[nn.Module] = []
    for index, (a, b) in enumerate(itertools.pairwise(sizes)):
        # skip_init builds on the CPU unless told the default device ("meta" in load's check).
        linear = nn.utils.skip_init(nn.Linear, a, b, device=torch.get_default_device())
        last = index == len(sizes) - 2
        with torch.no_grad():
            for tensor in (linear.weight, linear.bias):
                if last:
                    tensor.zero_()
                else:
                    noise = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                    tensor.copy_((2.0 * noise - 1.0) / max(a, 1) ** 0.5)
        modules.append(linear)
        if not last:
            modules.append(activation())
    return nn.Sequential(*modules)


class AffineCoupling(Layer):
    r"""Masked affine coupling :math:`y_B = x_B e^{s(x_A)} + t(x_A)`, :math:`y_A = x_A`.

    The conditioner is an MLP with smooth activations (SiLU by default), so the energy is
    twice differentiable; the log-scale is bounded smoothly,
    :math:`s = c \tanh(\tilde s / c)` with :math:`c` = ``scale_bound``. The last layer of
    the conditioner starts at zero, so the coupling starts as the identity.

    Parameters
    ----------
    features : int
        Dimension :math:`D \ge 2`.
    parity : int, default=0
        Features with ``index % 2 == parity`` condition the others.
    hidden_features : tuple of int, default=(64, 64)
        Widths of the conditioner's hidden layers.
    activation : callable, default=torch.nn.SiLU
        Constructor of the (smooth) activation.
    scale_bound : float, default=3.0
        Bound on the absolute log-scale.
    generator : torch.Generator, optional
        Source of the conditioner's initial weights.

    Examples
    --------
    >>> import torch
    >>> layer = AffineCoupling(4).double()
    >>> x = torch.randn(5, 4, dtype=torch.float64)
    >>> y, ladj = layer(x)
    >>> torch.allclose(layer.inverse(y), x)
    True
    """

    def __init__(
        self,
        features: int,
        *,
        parity: int = 0,
        hidden_features: tuple[int, ...] = (64, 64),
        activation: Callable[[], nn.Module] = nn.SiLU,
        scale_bound: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if features < 2:
            raise ValueError("AffineCoupling needs at least 2 features.")
        self.register_buffer("cond_index", torch.arange(parity % 2, features, 2))
        self.register_buffer("trans_index", torch.arange(1 - parity % 2, features, 2))
        n_cond, n_trans = len(self.cond_index), len(self.trans_index)
        self.net = smooth_mlp(n_cond, 2 * n_trans, tuple(hidden_features), activation, generator)
        self.scale_bound = float(scale_bound)

    def _params(self, x_cond: Tensor) -> tuple[Tensor, Tensor]:
        raw_scale, shift = self.net(x_cond).chunk(2, dim=-1)
        log_scale = self.scale_bound * torch.tanh(raw_scale / self.scale_bound)
        return log_scale, shift

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(y, sum(s(x_A)))``."""
        x_cond, x_trans = x[:, self.cond_index], x[:, self.trans_index]
        log_scale, shift = self._params(x_cond)
        y = torch.empty_like(x)
        y[:, self.cond_index] = x_cond
        y[:, self.trans_index] = x_trans * torch.exp(log_scale) + shift
        return y, log_scale.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """Closed-form inverse: :math:`x_B = (y_B - t(y_A)) e^{-s(y_A)}`."""
        y_cond, y_trans = y[:, self.cond_index], y[:, self.trans_index]
        log_scale, shift = self._params(y_cond)
        x = torch.empty_like(y)
        x[:, self.cond_index] = y_cond
        x[:, self.trans_index] = (y_trans - shift) * torch.exp(-log_scale)
        return x
