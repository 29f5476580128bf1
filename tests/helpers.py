"""Helpers shared by the test modules: float64 flows with random, non-trivial parameters."""

from __future__ import annotations

import torch

from skebflow.nn.architectures import ARCHITECTURES
from skebflow.nn.flow import EnergyFlow
from skebflow.nn.linear import ActNorm


def perturb_(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.3) -> None:
    """Add Gaussian noise to every parameter and mark ActNorm layers as initialized."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator).to(parameter))
        for layer in module.modules():
            if isinstance(layer, ActNorm):
                layer.initialized.fill_(True)


def random_flow(
    architecture: str, features: int, seed: int = 0, scale: float = 0.3, **options: object
) -> EnergyFlow:
    """Build a float64 flow of the given architecture with random parameters."""
    generator = torch.Generator().manual_seed(seed)
    flow = ARCHITECTURES[architecture](features, generator=generator, **options).double()
    perturb_(flow, generator, scale)
    return flow
