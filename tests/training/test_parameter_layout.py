"""Parameter memory layouts and fused optimizers (regression tests for a silent bug).

``Adam(fused=True)`` walks a parameter and its gradient as flat buffers. A transposed
parameter (strides ``(1, D)``) given a row-major gradient was updated with the transposed
gradient, which made maximum-likelihood training of coupling flows *raise* the loss.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from skebflow.nn._architectures import ARCHITECTURES
from skebflow.objectives._registry import bind_objective
from skebflow.training._trainer import TrainConfig, make_optimizer, train, train_step


def _transposed_parameter(seed: int) -> torch.nn.Parameter:
    weight = torch.randn(6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    parameter = torch.nn.Parameter(weight.t())  # a column-major view: strides (1, 6)
    assert parameter.stride() == (1, 6)
    return parameter


def _loss(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Not symmetric in the weight, so a transposed step changes the trajectory.
    return 0.5 * (x @ weight.T).pow(2).sum(1).mean() - torch.linalg.slogdet(weight)[1]


@pytest.mark.parametrize("fused", [True, False])
def test_train_step_takes_the_backward_steps_on_a_transposed_parameter(fused):
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = x * torch.linspace(0.2, 3.0, 6, dtype=torch.float64)

    reference = _transposed_parameter(1)
    optimizer = torch.optim.Adam([reference], lr=1e-2, fused=False)
    for _ in range(40):
        optimizer.zero_grad()
        _loss(reference, x).backward()
        optimizer.step()

    parameter = _transposed_parameter(1)
    optimizer = torch.optim.Adam([parameter], lr=1e-2, fused=fused)
    model = torch.nn.Module()
    for _ in range(40):
        train_step(
            model,
            lambda m, y, g: _loss(parameter, y),
            x,
            optimizer=optimizer,
            parameters=[parameter],
            generator=torch.Generator(),
        )
    assert parameter.grad.stride() == parameter.stride()
    torch.testing.assert_close(parameter.detach(), reference.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_parameter_is_row_major_at_creation_and_after_moves(architecture):
    flow = ARCHITECTURES[architecture](4, generator=torch.Generator().manual_seed(0))
    for module in (flow, flow.double(), flow.to("cpu", torch.float32)):
        for name, parameter in module.named_parameters():
            assert parameter.is_contiguous(), name


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_maximum_likelihood_lowers_the_training_nll_over_the_first_epochs(architecture):
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    z = torch.randn(512, 4, generator=generator, dtype=torch.float64)
    x = torch.sinh(1.5 * z) @ mixing  # skewed, heavy-tailed and correlated: far from a flow's start
    x = (x - x.mean(0)) / x.std(0)
    flow = ARCHITECTURES[architecture](4, generator=generator).double()
    result = train(
        flow,
        bind_objective("ml"),
        x,
        config=TrainConfig(learning_rate=1e-3, batch_size=32, max_iter=5, ema_decay=None),
        generator=generator,
        score_fn=lambda model: float(model.log_prob(x).mean().detach()),  # the training likelihood
    )
    scores = result.validation_scores
    assert len(scores) == 5
    # Steady progress: a clear gain overall, and no epoch more than SGD noise worse.
    assert scores[-1] > scores[0] + 0.1, scores
    assert all(later > earlier - 0.05 for earlier, later in itertools.pairwise(scores)), scores


def test_make_optimizer_is_fused_on_cpu_so_the_layout_matters():
    assert make_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], 1e-3).defaults["fused"]
