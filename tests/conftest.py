"""Shared fixtures (quiet short fits, a seeded generator); helpers live in tests/helpers.py."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

# The suite's models are tiny: one intra-op thread is several times faster than two on a
# loaded 2-core machine (thread hand-off dominates), and joblib workers do not oversubscribe.
torch.set_num_threads(1)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def quiet_convergence() -> Iterator[None]:
    """Silence the ConvergenceWarning of deliberately short fits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield
