"""Shared fixtures: float64 flows with random, non-trivial parameters; quiet short fits."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skebflow.architectures import ARCHITECTURES
from skebflow.flow import EnergyFlow
from skebflow.layers import ActNorm

# The suite's models are tiny: one intra-op thread is several times faster than two on a
# loaded 2-core machine (thread hand-off dominates), and joblib workers do not oversubscribe.
torch.set_num_threads(1)


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


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def quiet_convergence() -> Iterator[None]:
    """Silence the ConvergenceWarning of deliberately short fits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield
