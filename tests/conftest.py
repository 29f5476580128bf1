"""Shared fixtures (a seeded generator); helpers and warning filters live in tests/helpers.py."""

from __future__ import annotations

import pytest
import torch

# The suite's models are tiny: one intra-op thread is several times faster than two on a
# loaded 2-core machine (thread hand-off dominates), and joblib workers do not oversubscribe.
torch.set_num_threads(1)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
