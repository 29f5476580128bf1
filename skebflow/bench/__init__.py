"""The benchmarks behind ``python -m skebflow bench`` (speed, nll, truth, quality)."""

from skebflow.bench._baselines import QUALITY_PEERS
from skebflow.bench._cli import main

__all__ = [
    "QUALITY_PEERS",
    "main",
]
