"""The image flows on flat rows: what ``architecture="conv"`` and ``"glow"`` build.

The estimator, its preprocessing and the objectives work on rows ``(n, D)``; these builders
put a :class:`~skebflow.nn._shapes.Reshape` first, which reads each row as an image of
``image_shape`` in C·H·W order, in front of the flows of :mod:`skebflow.nn._image`.

References
----------
.. [1] C.-H. Chao et al., "Training Energy-Based Normalizing Flow with Score-Matching
   Objectives", NeurIPS 2023, arXiv:2305.15267 (the CNN model).
.. [2] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1
   Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from skebflow.nn._base import HIDDEN_FEATURES, Layer
from skebflow.nn._conv import Conv1x1
from skebflow.nn._conv_coupling import ConvAffineCoupling
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._image import CONV_BLOCKS, GLOW_LEVELS, build_conv, build_glow
from skebflow.nn._shapes import ActNorm2d, Reshape

__all__ = ["build_conv_rows", "build_glow_rows", "halvings"]


def halvings(image_shape: Sequence[int]) -> int:
    """Return how many 2×2 squeezes an image ``(C, H, W)`` allows (``H`` and ``W`` both even).

    Examples
    --------
    >>> halvings((1, 28, 28)), halvings((3, 32, 32)), halvings((1, 1, 5))
    (2, 5, 0)
    """
    _, height, width = (int(size) for size in image_shape)
    count = 0
    while height > 0 and width > 0 and height % 2 == 0 and width % 2 == 0:
        height, width, count = height // 2, width // 2, count + 1
    return count


def _rows_shape(features: int, image_shape: Sequence[int] | None) -> tuple[int, int, int]:
    shape = (int(features), 1, 1) if image_shape is None else tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1 or math.prod(shape) != features:
        raise ValueError(
            f"image_shape {tuple(image_shape)} must be (C, H, W) with C·H·W = {features} "
            "(the number of features)."
        )
    return shape  # type: ignore[return-value]


def _on_rows(flow: EnergyFlow) -> EnergyFlow:
    """Return the same flow on flat rows (a :class:`~skebflow.nn._shapes.Reshape` first)."""
    return EnergyFlow([Reshape(flow.event_shape), *flow.layers], features=flow.features)


def build_conv_rows(
    features: int,
    *,
    image_shape: Sequence[int] | None = None,
    n_blocks: int | None = None,
    convs_per_block: int = 2,
    kernel_size: int = 7,
    alpha: float = 0.3,
    generator: torch.Generator | None = None,
) -> EnergyFlow:
    """Build the paper's CNN (:func:`~skebflow.nn._image.build_conv`) on flat rows.

    Each row of ``D = C·H·W`` entries is read as an image of ``image_shape`` in C·H·W order
    (:class:`~skebflow.nn._shapes.Reshape`), so the flow's ``event_shape`` is ``(D,)``.

    Parameters
    ----------
    features : int
        Data dimension :math:`D`.
    image_shape : tuple of int, optional
        ``(C, H, W)`` with ``C·H·W = features``; ``None`` reads a row as a 1×1 image with
        ``D`` channels.
    n_blocks : int, optional
        Blocks of :func:`~skebflow.nn._image.build_conv`; ``None`` takes the paper's 3, or
        ``1 + halvings(image_shape)`` if the image allows fewer squeezes.
    convs_per_block, kernel_size, alpha
        As in :func:`~skebflow.nn._image.build_conv`.
    generator : torch.Generator, optional
        Unused (the initialization is deterministic); accepted for a uniform signature.

    Returns
    -------
    EnergyFlow
        The flow, with ``event_shape = (D,)``.

    Examples
    --------
    >>> flow = build_conv_rows(16, image_shape=(1, 4, 4), n_blocks=2, kernel_size=3)
    >>> [type(layer).__name__ for layer in flow.layers][:3]
    ['Reshape', 'Conv2d', 'SmoothLeakyReLU']
    >>> flow.event_shape, tuple(flow.sample(2).shape)
    ((16,), (2, 16))
    """
    shape = _rows_shape(features, image_shape)
    if n_blocks is None:
        n_blocks = min(CONV_BLOCKS, 1 + halvings(shape))
    flow = build_conv(
        shape,
        n_blocks=n_blocks,
        convs_per_block=convs_per_block,
        kernel_size=kernel_size,
        alpha=alpha,
        generator=generator,
    )
    return _on_rows(flow)


def build_glow_rows(
    features: int,
    *,
    image_shape: Sequence[int] | None = None,
    n_blocks: int | None = None,
    steps_per_level: int = 4,
    hidden_features: int = HIDDEN_FEATURES,
    activation: Callable[[], nn.Module] = nn.SiLU,
    generator: torch.Generator | None = None,
) -> EnergyFlow:
    """Build a multi-scale Glow (:func:`~skebflow.nn._image.build_glow`) on flat rows.

    ``n_blocks`` is the number of levels (one squeeze each). With ``n_blocks=None`` it is
    2, or ``halvings(image_shape)`` if the image allows fewer squeezes; an image that
    allows none (odd ``H`` or ``W``) gets one level of ``steps_per_level`` flow steps
    without a squeeze, which needs ``C >= 2``.

    Parameters
    ----------
    features : int
        Data dimension :math:`D`.
    image_shape : tuple of int, optional
        ``(C, H, W)`` with ``C·H·W = features``; ``None`` reads a row as a 1×1 image with
        ``D`` channels.
    n_blocks : int, optional
        Number of levels (at least 1 when given).
    steps_per_level : int, default=4
        Flow steps per level.
    hidden_features : int, default=64
        Width of the couplings' conditioners (``hidden_channels``).
    activation : callable, default=torch.nn.SiLU
        Constructor of the smooth activation inside the conditioners.
    generator : torch.Generator, optional
        Source of the rotations and of the conditioners' weights.

    Returns
    -------
    EnergyFlow
        The flow, with ``event_shape = (D,)``.

    Examples
    --------
    >>> flow = build_glow_rows(16, image_shape=(1, 4, 4), steps_per_level=1, hidden_features=8)
    >>> [type(layer).__name__ for layer in flow.layers][:3]
    ['Reshape', 'Squeeze', 'ActNorm2d']
    >>> [type(layer).__name__ for layer in build_glow_rows(3, steps_per_level=1).layers]
    ['Reshape', 'ActNorm2d', 'Conv1x1', 'ConvAffineCoupling']
    """
    shape = _rows_shape(features, image_shape)
    if n_blocks is None:
        n_blocks = min(GLOW_LEVELS, halvings(shape))
    if n_blocks >= 1:
        flow = build_glow(
            shape,
            n_levels=n_blocks,
            steps_per_level=steps_per_level,
            hidden_channels=hidden_features,
            activation=activation,
            generator=generator,
        )
        return _on_rows(flow)
    channels, height, width = shape
    if channels < 2 or steps_per_level < 1:
        raise ValueError(
            f"A Glow on an image of shape {shape} (n_features={features}), which allows no "
            "2×2 squeeze, needs at least 2 channels for its couplings to split, and "
            f"steps_per_level >= 1 (got {steps_per_level})."
        )
    layers: list[Layer] = [Reshape(shape)]
    for step in range(steps_per_level):
        layers += [
            ActNorm2d(channels, (height, width)),
            Conv1x1(channels, (height, width), generator=generator),
            ConvAffineCoupling(
                channels,
                parity=step % 2,
                hidden_channels=hidden_features,
                activation=activation,
                generator=generator,
            ),
        ]
    return EnergyFlow(layers, features=features)
