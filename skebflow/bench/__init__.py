"""The benchmarks behind ``python -m skebflow bench``.

The subcommands: speed, nll, truth, quality, inference and anytime.
"""

from skebflow.bench._baselines import QUALITY_PEERS
from skebflow.bench._cli import main

__all__ = [
    "QUALITY_PEERS",
    "main",
]
