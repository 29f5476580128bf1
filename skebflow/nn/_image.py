r"""Builders of image flows: the EBFlow paper's CNN and a multi-scale Glow.

Both return an untrained float32 :class:`~skebflow.nn._flow.EnergyFlow` on events of shape
``(C, H, W)`` that starts close to the identity. The constant-Jacobian layers
(:mod:`skebflow.nn._conv`: convolutions, 1×1 convolutions, ActNorm, squeeze) enter only the
log-normalizer; the smooth leaky ReLUs and the couplings enter the energy
(``docs/design.md``).

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267 (the CNN model).
.. [2] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
   Convolutions", NeurIPS 2018 (the multi-scale flow).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from skebflow.nn._activations import SmoothLeakyReLU
from skebflow.nn._base import HIDDEN_FEATURES, Layer, Split
from skebflow.nn._conv import Conv1x1, Conv2d
from skebflow.nn._conv_coupling import ConvAffineCoupling
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._shapes import ActNorm2d, Squeeze

__all__ = ["CONV_BLOCKS", "GLOW_LEVELS", "build_conv", "build_glow"]

#: The paper's CNN: blocks of convolutions (a squeeze between two blocks).
CONV_BLOCKS = 3
#: Glow's levels (one squeeze each).
GLOW_LEVELS = 2


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(size) for size in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}.")
    return shape


def _squeezable(shape: tuple[int, int, int], times: int, option: str) -> None:
    _, height, width = shape
    factor = 2**times
    if height % factor or width % factor:
        raise ValueError(
            f"{option} needs H and W divisible by {factor} (one 2×2 squeeze per level), "
            f"got an image of shape {shape}."
        )


def build_conv(
    image_shape: Sequence[int],
    *,
    n_blocks: int = CONV_BLOCKS,
    convs_per_block: int = 2,
    kernel_size: int = 7,
    alpha: float = 0.3,
    generator: torch.Generator | None = None,
) -> EnergyFlow:
    r"""Build the EBFlow paper's CNN: blocks of convolutions with squeezes between them.

    Each block is ``convs_per_block`` same-padded :math:`C \to C` convolutions with bias
    (:class:`~skebflow.nn._conv.Conv2d`, unconstrained kernels), each followed by a residual
    smooth leaky ReLU except the flow's last convolution; a 2×2 squeeze
    (:class:`~skebflow.nn._shapes.Squeeze`) precedes every block but the first. The defaults
    (3 blocks × 2 convolutions, 7×7 kernels) are the paper's. Kernels start at the
    identity (a centred delta).

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2 ** (n_blocks - 1)``.
    n_blocks : int, default=3
        Number of blocks (at least 1).
    convs_per_block : int, default=2
        Convolutions per block (at least 1).
    kernel_size : int, default=7
        Odd kernel size of every convolution.
    alpha : float, default=0.3
        Negative slope of the smooth leaky ReLU.
    generator : torch.Generator, optional
        Unused (the initialization is deterministic); accepted for a uniform signature.

    Returns
    -------
    EnergyFlow
        The flow, with ``event_shape = image_shape``.

    Examples
    --------
    >>> flow = build_conv((1, 4, 4), n_blocks=2, convs_per_block=1, kernel_size=3)
    >>> [type(layer).__name__ for layer in flow.layers]
    ['Conv2d', 'SmoothLeakyReLU', 'Squeeze', 'Conv2d']
    >>> flow.latent_shape
    (4, 2, 2)
    """
    shape = _image_shape(image_shape)
    if n_blocks < 1 or convs_per_block < 1:
        raise ValueError(
            f"n_blocks and convs_per_block must be at least 1, got {n_blocks}, {convs_per_block}."
        )
    _squeezable(shape, n_blocks - 1, f"build_conv(n_blocks={n_blocks})")
    channels, height, width = shape
    layers: list[Layer] = []
    for block in range(n_blocks):
        if block > 0:
            layers.append(Squeeze())
            channels, height, width = 4 * channels, height // 2, width // 2
        for index in range(convs_per_block):
            layers.append(Conv2d(channels, (height, width), kernel_size=kernel_size))
            if block < n_blocks - 1 or index < convs_per_block - 1:
                layers.append(SmoothLeakyReLU(alpha, residual=True))
    return EnergyFlow(layers, event_shape=shape)


def build_glow(
    image_shape: Sequence[int],
    *,
    n_levels: int = GLOW_LEVELS,
    steps_per_level: int = 4,
    hidden_channels: int = HIDDEN_FEATURES,
    activation: Callable[[], nn.Module] = nn.SiLU,
    generator: torch.Generator | None = None,
) -> EnergyFlow:
    r"""Build a multi-scale Glow: per level, squeeze, flow steps, and a split.

    Every level squeezes (:math:`C \to 4C`, :math:`H, W \to H/2, W/2`), runs
    ``steps_per_level`` steps of [ActNorm → unconstrained 1×1 convolution → affine
    coupling with a smooth convolutional conditioner], and, except the last level,
    factors half of the channels out to the base distribution
    (:class:`~skebflow.nn._base.Split`). ActNorm, the 1×1 convolutions and the squeezes
    have constant Jacobians (the log-normalizer); the couplings' log-determinants are in
    the energy. The 1×1 convolutions start at random rotations drawn from ``generator``,
    the couplings at the identity with alternating channel groups.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2 ** n_levels``.
    n_levels : int, default=2
        Number of levels (at least 1).
    steps_per_level : int, default=4
        Flow steps per level (at least 1).
    hidden_channels : int, default=64
        Width of the couplings' conditioners.
    activation : callable, default=torch.nn.SiLU
        Constructor of the smooth activation inside the conditioners.
    generator : torch.Generator, optional
        Source of the rotations and of the conditioners' weights.

    Returns
    -------
    EnergyFlow
        The flow, with ``event_shape = image_shape``.

    Examples
    --------
    >>> flow = build_glow((1, 4, 4), n_levels=2, steps_per_level=1, hidden_channels=8)
    >>> [type(layer).__name__ for layer in flow.layers][:5]
    ['Squeeze', 'ActNorm2d', 'Conv1x1', 'ConvAffineCoupling', 'Split']
    >>> flow.latent_event_shape
    (8, 1, 1)
    """
    shape = _image_shape(image_shape)
    if n_levels < 1 or steps_per_level < 1:
        raise ValueError(
            f"n_levels and steps_per_level must be at least 1, got {n_levels}, {steps_per_level}."
        )
    _squeezable(shape, n_levels, f"build_glow(n_levels={n_levels})")
    channels, height, width = shape
    layers: list[Layer] = []
    for level in range(n_levels):
        layers.append(Squeeze())
        channels, height, width = 4 * channels, height // 2, width // 2
        spatial = (height, width)
        for step in range(steps_per_level):
            layers += [
                ActNorm2d(channels, spatial),
                Conv1x1(channels, spatial, generator=generator),
                ConvAffineCoupling(
                    channels,
                    parity=step % 2,
                    hidden_channels=hidden_channels,
                    activation=activation,
                    generator=generator,
                ),
            ]
        if level < n_levels - 1:
            layers.append(Split(channels // 2))
            channels //= 2
    return EnergyFlow(layers, event_shape=shape)
