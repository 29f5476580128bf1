r"""Masked autoregressive spline transforms (every feature conditioned on the ones before it).

A :class:`MaskedAutoregressiveSpline` moves feature :math:`i` through a monotone
rational-quadratic spline (:mod:`skebflow.nn._splines`) whose parameters are computed from
:math:`x_{<i}` by one masked MLP (MADE [1]_): the masks remove every path from
:math:`x_{\ge i}` to the parameters of feature :math:`i`, so one forward pass gives all of
them. The Jacobian is lower triangular with diagonal :math:`g_i'(x_i)`, so the
log-determinant is :math:`\sum_i \log g_i'(x_i)`, O(D) and input-dependent: the layer
belongs to the energy (the set **N** of [3]_). Unlike a coupling, which leaves half of the
features unchanged, every feature is transformed, conditioned on all earlier ones, as in
the neural spline flows of [2]_. The inverse needs D passes of the MLP (feature by
feature), which only sampling uses.

References
----------
.. [1] M. Germain, K. Gregor, I. Murray, H. Larochelle, "MADE: Masked Autoencoder for
   Distribution Estimation", ICML 2015.
.. [2] C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural Spline Flows",
   NeurIPS 2019.
.. [3] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skebflow.nn._base import Layer
from skebflow.nn._splines import check_spline_options, rq_spline, rq_spline_inverse

__all__ = ["MaskedAutoregressiveSpline", "MaskedLinear"]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer).

    Parameters
    ----------
    mask : Tensor of shape (out_features, in_features)
        Which connections exist.

    Examples
    --------
    >>> layer = MaskedLinear(torch.tensor([[1.0, 0.0]]))
    >>> layer.weight.shape, float(layer(torch.tensor([[0.0, 5.0]])) - layer.bias)
    (torch.Size([1, 2]), 0.0)
    """

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the masked affine map."""
        return F.linear(x, self.weight * self.mask, self.bias)


def _made(
    features: int,
    per_feature: int,
    hidden_features: tuple[int, ...],
    activation: Callable[[], nn.Module],
    generator: torch.Generator | None,
) -> nn.Sequential:
    """Build a MADE: output block ``i`` (``per_feature`` values) sees inputs ``< i`` only.

    Input degrees are ``1..D``; hidden degrees cycle through ``1..D-1``; an output of
    feature ``i`` (degree ``i``) connects to hidden units of degree ``< i``. Hidden layers
    start with PyTorch's uniform bound 1/sqrt(fan_in) (from ``generator``), the last layer
    at zero (the identity transform).
    """
    degrees = [torch.arange(1, features + 1)]
    for width in hidden_features:
        degrees.append(torch.arange(width) % max(features - 1, 1) + 1)
    out_degrees = torch.arange(1, features + 1).repeat_interleave(per_feature)
    modules: list[nn.Module] = []
    pairs = list(itertools.pairwise(degrees))
    for d_in, d_out in pairs:
        linear = MaskedLinear((d_out[:, None] >= d_in[None, :]).float())
        with torch.no_grad():
            for tensor in (linear.weight, linear.bias):
                noise = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                tensor.copy_((2.0 * noise - 1.0) / max(len(d_in), 1) ** 0.5)
        modules += [linear, activation()]
    last = MaskedLinear((out_degrees[:, None] > degrees[-1][None, :]).float())
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    modules.append(last)
    return nn.Sequential(*modules)


class MaskedAutoregressiveSpline(Layer):
    r"""Autoregressive rational-quadratic spline transform of all features.

    Feature :math:`i` goes through a spline with ``n_bins`` bins on
    :math:`[-B, B]` (identity outside) whose parameters come from :math:`x_{<i}` through a
    smooth masked MLP; the first feature's spline is unconditional. Starts at the identity.

    Parameters
    ----------
    features : int
        Dimension :math:`D \ge 1`.
    hidden_features : tuple of int, default=(64, 64)
        Widths of the MADE's hidden layers.
    n_bins : int, default=8
        Bins per spline.
    bound : float, default=4.0
        Half-width of the splines' box.
    activation : callable, default=torch.nn.SiLU
        Constructor of the (smooth) activation.
    generator : torch.Generator, optional
        Source of the initial weights.

    Examples
    --------
    >>> layer = MaskedAutoregressiveSpline(3).double()
    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> y, ladj = layer(x)
    >>> bool(torch.allclose(y, x)), bool(torch.allclose(layer.inverse(y), x))
    (True, True)
    """

    def __init__(
        self,
        features: int,
        *,
        hidden_features: tuple[int, ...] = (64, 64),
        n_bins: int = 8,
        bound: float = 4.0,
        activation: Callable[[], nn.Module] = nn.SiLU,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be positive, got {features}.")
        check_spline_options(n_bins, bound)
        self.features, self.n_bins, self.bound = int(features), int(n_bins), float(bound)
        per_feature = 3 * self.n_bins - 1
        self.net = _made(features, per_feature, tuple(hidden_features), activation, generator)

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raw = self.net(x).unflatten(-1, (self.features, 3 * self.n_bins - 1))
        k = self.n_bins
        return raw[..., :k], raw[..., k : 2 * k], raw[..., 2 * k :]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(y, sum_i log g_i'(x_i))`` from one pass of the masked MLP."""
        y, log_d = rq_spline(x, *self._params(x), bound=self.bound)
        return y, log_d.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """Invert feature by feature (``D`` passes of the masked MLP)."""
        x = torch.zeros_like(y)
        for i in range(self.features):
            widths, heights, derivatives = (p[:, i] for p in self._params(x))
            column = rq_spline_inverse(y[:, i], widths, heights, derivatives, bound=self.bound)
            x = torch.cat([x[:, :i], column[:, None], x[:, i + 1 :]], dim=1)
        return x
