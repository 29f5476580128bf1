"""Builders that turn hyperparameters into :class:`~skebflow.nn._flow.EnergyFlow` objects.

``ARCHITECTURES[name](features, **options)`` returns an untrained flow in float32 (call
``.double()`` or ``.to(...)`` as needed). Every builder starts close to the identity so that
training starts stable on standardized data. Every flow here takes flat rows ``(n, D)``;
the image flows (``"conv"``, ``"glow"``: :mod:`skebflow.nn._image`) read each row as an
image of ``image_shape`` in C·H·W order through a first :class:`~skebflow.nn._shapes.Reshape`
(:mod:`skebflow.nn._image_rows`).

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267 (the FC model and the 2-D coupling model).
.. [2] L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP",
   ICLR 2017.
.. [3] C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural Spline Flows",
   NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from skebflow.nn._activations import SmoothLeakyReLU
from skebflow.nn._autoregressive import MaskedAutoregressiveSpline
from skebflow.nn._base import HIDDEN_FEATURES, Layer
from skebflow.nn._coupling import AffineCoupling
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._image_rows import build_conv_rows, build_glow_rows, halvings
from skebflow.nn._linear import ActNorm, Dense
from skebflow.nn._splines import RationalQuadraticCoupling, RationalQuadraticSpline

__all__ = [
    "ARCHITECTURES",
    "IMAGE_ARCHITECTURES",
    "build_autoregressive",
    "build_conv_rows",
    "build_coupling",
    "build_fc",
    "build_glow_rows",
    "build_spline",
    "halvings",
]


def build_fc(
    features: int,
    *,
    n_blocks: int = 2,
    alpha: float = 0.3,
    residual: bool = False,
    generator: torch.Generator | None = None,
) -> EnergyFlow:
    """Build the paper's FC flow: dense layers with smooth leaky ReLUs between them.

    ``n_blocks`` dense layers; ``n_blocks=2`` is the paper's MNIST-FC model,
    Dense → SmoothLeakyReLU → Dense. Dense layers start at the identity.

    Parameters
    ----------
    features : int
        Data dimension :math:`D`.
    n_blocks : int, default=2
        Number of dense layers (at least 1).
    alpha : float, default=0.3
        Negative slope of the smooth leaky ReLU.
    residual : bool, default=False
        Use the residual smooth leaky ReLU :math:`x + f(x)`.
    generator : torch.Generator, optional
        Unused (the initialization is deterministic); accepted for a uniform signature.

    Returns
    -------
    EnergyFlow
        The flow.

    Examples
    --------
    >>> flow = build_fc(3, n_blocks=2)
    >>> [type(layer).__name__ for layer in flow.layers]
    ['Dense', 'SmoothLeakyReLU', 'Dense']
    """
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be at least 1, got {n_blocks}.")
    layers: list[Layer] = [Dense(features)]
    for _ in range(n_blocks - 1):
        layers += [SmoothLeakyReLU(alpha, residual=residual), Dense(features)]
    return EnergyFlow(layers, features)


def _coupling_stack(
    features: int,
    n_blocks: int,
    coupling: Callable[[int, tuple[int, ...]], Layer],
    hidden_features: int | tuple[int, ...],
    generator: torch.Generator | None,
    dense_init: str = "orthogonal",
    single: Callable[[], Layer] = lambda: SmoothLeakyReLU(residual=True),
) -> EnergyFlow:
    """``n_blocks`` × [ActNorm → Dense → ``coupling(parity, hidden)``] → Dense.

    With one feature there is no half to condition on: each block takes ``single()``.
    """
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be at least 1, got {n_blocks}.")
    hidden = (hidden_features,) * 2 if isinstance(hidden_features, int) else hidden_features
    layers: list[Layer] = []
    for block in range(n_blocks):
        layers += [ActNorm(features), Dense(features, init=dense_init, generator=generator)]
        # One feature has no half to condition on: an elementwise layer instead.
        layers.append(single() if features == 1 else coupling(block % 2, tuple(hidden)))
    layers.append(Dense(features, init=dense_init, generator=generator))
    return EnergyFlow(layers, features)


def build_coupling(
    features: int,
    *,
    n_blocks: int = 4,
    hidden_features: int | tuple[int, ...] = HIDDEN_FEATURES,
    activation: Callable[[], nn.Module] = nn.SiLU,
    generator: torch.Generator | None = None,
) -> EnergyFlow:
    """Build the tabular default: ``n_blocks`` × [ActNorm → Dense → AffineCoupling] → Dense.

    Dense layers start at a random orthogonal matrix (drawn from ``generator``) so that
    successive couplings see mixed features; couplings start at the identity and alternate
    their masks. For ``features == 1`` no coupling exists, and each block's coupling is
    replaced by a :class:`~skebflow.nn._activations.SmoothLeakyReLU` (a residual one, so that the
    block stays close to the identity).

    Parameters
    ----------
    features : int
        Data dimension :math:`D`.
    n_blocks : int, default=4
        Number of blocks.
    hidden_features : int or tuple of int, default=64
        Width(s) of the conditioner's hidden layers; an integer means two layers of that
        width.
    activation : callable, default=torch.nn.SiLU
        Constructor of the smooth activation used inside conditioners.
    generator : torch.Generator, optional
        Source of the random orthogonal initialization and of the conditioners' weights.

    Returns
    -------
    EnergyFlow
        The flow.

    Examples
    --------
    >>> flow = build_coupling(2, n_blocks=1, hidden_features=8)
    >>> [type(layer).__name__ for layer in flow.layers]
    ['ActNorm', 'Dense', 'AffineCoupling', 'Dense']
    """
    return _coupling_stack(
        features,
        n_blocks,
        lambda parity, hidden: AffineCoupling(
            features,
            parity=parity,
            hidden_features=hidden,
            activation=activation,
            generator=generator,
        ),
        hidden_features,
        generator,
    )


def build_spline(
    features: int,
    *,
    n_blocks: int = 4,
    hidden_features: int | tuple[int, ...] = HIDDEN_FEATURES,
    n_bins: int = 8,
    bound: float = 4.0,
    activation: Callable[[], nn.Module] = nn.SiLU,
    dense_init: str = "identity",
    generator: torch.Generator | None = None,
) -> EnergyFlow:
    """Build ``n_blocks`` × [ActNorm → Dense → rational-quadratic spline coupling] → Dense.

    The constant-Jacobian layers (ActNorm, unconstrained dense mixing) go into the
    log-normalizer; the spline couplings, whose log-determinant depends on the input, go
    into the energy. Dense layers start at the identity (``dense_init``), couplings at the
    identity with alternating masks. For ``features == 1`` each coupling is replaced by an
    unconditional elementwise spline (:class:`RationalQuadraticSpline`), so that
    one-dimensional densities can be multimodal.

    Parameters
    ----------
    features : int
        Data dimension :math:`D`.
    n_blocks : int, default=4
        Number of blocks.
    hidden_features : int or tuple of int, default=64
        Width(s) of the conditioner's hidden layers; an integer means two layers of that
        width.
    n_bins : int, default=8
        Bins of every spline.
    bound : float, default=4.0
        Half-width of the splines' box (beyond it, the identity).
    activation : callable, default=torch.nn.SiLU
        Constructor of the smooth activation used inside conditioners.
    dense_init : {"identity", "orthogonal"}, default="identity"
        Initial weight of the dense layers. The identity keeps every feature's own
        marginal shape (a bounded or near-constant column, a uniform dequantization) aligned
        with the splines' axes at the start; a random rotation smears such sharp edges
        across all features, which splines follow poorly (measured in
        ``docs/defaults.md``). The layers are unconstrained and learn mixing.
    generator : torch.Generator, optional
        Source of the random orthogonal initialization and of the conditioners' weights.

    Returns
    -------
    EnergyFlow
        The flow.

    Examples
    --------
    >>> flow = build_spline(2, n_blocks=1, hidden_features=8)
    >>> [type(layer).__name__ for layer in flow.layers]
    ['ActNorm', 'Dense', 'RationalQuadraticCoupling', 'Dense']
    """
    return _coupling_stack(
        features,
        n_blocks,
        lambda parity, hidden: RationalQuadraticCoupling(
            features,
            parity=parity,
            hidden_features=hidden,
            n_bins=n_bins,
            bound=bound,
            activation=activation,
            generator=generator,
        ),
        hidden_features,
        generator,
        dense_init,
        single=lambda: RationalQuadraticSpline(1, n_bins=n_bins, bound=bound),
    )


def build_autoregressive(
    features: int,
    *,
    n_blocks: int = 4,
    hidden_features: int | tuple[int, ...] = HIDDEN_FEATURES,
    n_bins: int = 8,
    bound: float = 4.0,
    activation: Callable[[], nn.Module] = nn.SiLU,
    dense_init: str = "identity",
    generator: torch.Generator | None = None,
) -> EnergyFlow:
    """Build ``n_blocks`` × [ActNorm → Dense → masked autoregressive spline] → Dense.

    As :func:`build_spline`, with every feature transformed in every block, conditioned on
    the features before it (:mod:`skebflow.nn._autoregressive`); the dense layers between the
    blocks change which features come first.

    Parameters
    ----------
    features : int
        Data dimension :math:`D`.
    n_blocks : int, default=4
        Number of blocks.
    hidden_features : int or tuple of int, default=64
        Width(s) of the masked MLPs' hidden layers; an integer means two layers.
    n_bins : int, default=8
        Bins of every spline.
    bound : float, default=4.0
        Half-width of the splines' box.
    activation : callable, default=torch.nn.SiLU
        Constructor of the smooth activation.
    dense_init : {"identity", "orthogonal"}, default="identity"
        Initial weight of the dense layers. The identity keeps every feature's own
        marginal shape (a bounded or near-constant column, a uniform dequantization) aligned
        with the splines' axes at the start; a random rotation smears such sharp edges
        across all features, which splines follow poorly (measured in
        ``docs/defaults.md``). The layers are unconstrained and learn mixing.
    generator : torch.Generator, optional
        Source of the random orthogonal initialization and of the networks' weights.

    Returns
    -------
    EnergyFlow
        The flow.

    Examples
    --------
    >>> flow = build_autoregressive(3, n_blocks=1, hidden_features=8)
    >>> [type(layer).__name__ for layer in flow.layers]
    ['ActNorm', 'Dense', 'MaskedAutoregressiveSpline', 'Dense']
    """
    return _coupling_stack(
        features,
        n_blocks,
        lambda parity, hidden: MaskedAutoregressiveSpline(
            features,
            hidden_features=hidden,
            n_bins=n_bins,
            bound=bound,
            activation=activation,
            generator=generator,
        ),
        hidden_features,
        generator,
        dense_init,
    )


ARCHITECTURES: dict[str, Callable[..., EnergyFlow]] = {
    "autoregressive": build_autoregressive,
    "fc": build_fc,
    "coupling": build_coupling,
    "spline": build_spline,
    "conv": build_conv_rows,
    "glow": build_glow_rows,
}
#: The architectures that read rows as images (``image_shape``).
IMAGE_ARCHITECTURES: tuple[str, ...] = ("conv", "glow")
