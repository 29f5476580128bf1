"""The fast score paths free what they record once a training step is done (no leak)."""

from __future__ import annotations

import gc

import pytest
import torch

from skebflow.nn import TangentTape
from skebflow.objectives import dsm, ssm
from tests.helpers import random_flow


def _live_tapes() -> int:
    gc.collect()
    return sum(isinstance(item, TangentTape) for item in gc.get_objects())


@pytest.mark.parametrize("objective", [ssm, dsm])
def test_a_training_step_of_the_fast_paths_leaves_no_tape_behind(objective):
    """The dense layer's backward once kept the tape in its autograd context, and the tape
    holds tensors whose graph leads back to that context: a cycle through autograd's
    graph, which Python's collector cannot free (megabytes a step at D = 784)."""
    flow = random_flow("fc", 8, seed=0)
    y = torch.randn(32, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = _live_tapes()
    for step in range(3):
        loss = objective(flow, y, generator=torch.Generator().manual_seed(step))
        loss.backward()
        del loss
    assert _live_tapes() == before
