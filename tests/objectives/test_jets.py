"""Taylor-mode energy jets: exact first and second directional derivatives."""

from __future__ import annotations

import types

import pytest
import torch

from skebflow import objectives
from skebflow.nn._activations import SmoothLeakyReLU
from skebflow.nn._architectures import build_coupling
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._linear import ActNorm, Dense, Permutation
from skebflow.objectives import _score_matching as score_matching
from skebflow.objectives._jets import energy_jet, energy_score_curvature, supports_jet
from tests.helpers import perturb_, random_flow


def _mixed_flow(features: int, seed: int) -> EnergyFlow:
    layers = [
        ActNorm(features),
        Dense(features),
        SmoothLeakyReLU(0.2),
        Permutation(features),
        Dense(features, bias=False),
        SmoothLeakyReLU(0.5, residual=True),
        ActNorm(features),
    ]
    flow = EnergyFlow(layers, features).double()
    perturb_(flow, torch.Generator().manual_seed(seed), 0.4)
    return flow


FLOWS = {
    "fc-1": lambda: random_flow("fc", 4, seed=0, n_blocks=1),
    "fc-2": lambda: random_flow("fc", 4, seed=1),
    "fc-3-residual": lambda: random_flow("fc", 4, seed=2, n_blocks=3, residual=True),
    "mixed": lambda: _mixed_flow(4, seed=3),
}


@pytest.mark.parametrize("name", FLOWS)
def test_jets_match_autograd_derivatives(name):
    flow = FLOWS[name]()
    generator = torch.Generator().manual_seed(7)
    y = 1.5 * torch.randn(5, 4, generator=generator, dtype=torch.float64)
    v = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    energy, first, second = energy_jet(flow, y, v)
    energy_2, score, second_2 = energy_score_curvature(flow, y, v)
    torch.testing.assert_close(energy, flow.energy(y))
    torch.testing.assert_close(energy_2, flow.energy(y))
    for i in range(5):

        def f(t: torch.Tensor) -> torch.Tensor:
            return flow.energy(t.unsqueeze(0)).sum()

        grad = torch.autograd.functional.jacobian(f, y[i])
        hess = torch.autograd.functional.hessian(f, y[i])
        torch.testing.assert_close(score[i], grad)
        for s in range(3):
            torch.testing.assert_close(first[s, i], grad @ v[s, i])
            torch.testing.assert_close(second[s, i], v[s, i] @ hess @ v[s, i])
            torch.testing.assert_close(second_2[s, i], v[s, i] @ hess @ v[s, i])


def test_score_curvature_parameter_gradients_match_the_jet():
    # Same function of the parameters, so the same gradients (what training relies on).
    flow = FLOWS["fc-3-residual"]()
    generator = torch.Generator().manual_seed(9)
    y = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    v = torch.randn(2, 6, 4, generator=generator, dtype=torch.float64)
    params = list(flow.parameters())
    _, grad, second = energy_score_curvature(flow, y, v)
    new = torch.autograd.grad((grad**2).sum() + second.sum(), params)
    leaf = y.clone().requires_grad_(True)
    energy, _, second_jet = energy_jet(flow, leaf, v)
    (grad_jet,) = torch.autograd.grad(energy.sum(), leaf, create_graph=True)
    old = torch.autograd.grad((grad_jet**2).sum() + second_jet.sum(), params)
    for a, b in zip(new, old, strict=True):
        torch.testing.assert_close(a, b)


def test_score_curvature_refuses_flows_without_rules():
    with pytest.raises(TypeError, match="second-order rule"):
        energy_score_curvature(build_coupling(2), torch.zeros(1, 2), torch.zeros(1, 1, 2))


def test_ssm_jet_path_under_no_grad_is_detached():
    flow = random_flow("fc", 3)
    y = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        loss = objectives.ssm(flow, y, generator=torch.Generator().manual_seed(0))
    assert not loss.requires_grad
    assert torch.isfinite(loss)


def test_actnorm_initializes_from_the_primal_not_the_tangents():
    flow = EnergyFlow([ActNorm(3), Dense(3)], 3).double().train()
    y = 3.0 + 2.0 * torch.randn(50, 3, generator=torch.Generator().manual_seed(0)).double()
    v = 100.0 * torch.ones(1, 50, 3, dtype=torch.float64)
    energy_jet(flow, y, v)
    z = flow.layers[0].map(y)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64))


def test_support_is_detected_and_required():
    assert supports_jet(random_flow("fc", 3))
    coupling = build_coupling(2, n_blocks=1)
    assert not supports_jet(coupling)
    assert not supports_jet(types.SimpleNamespace(energy=lambda y: y.sum(1)))
    with pytest.raises(TypeError, match="second-order rule"):
        energy_jet(coupling, torch.zeros(1, 2), torch.zeros(1, 1, 2))


def _loss_and_grads(flow: EnergyFlow, loss_fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
    flow.zero_grad()
    loss = loss_fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in flow.parameters()]


PATHS = {
    "ssm": (3, lambda flow, y: objectives.ssm(flow, y, generator=_seeded(2))),
    "ssm-3-slices": (3, lambda flow, y: objectives.ssm(flow, y, generator=_seeded(2), n_slices=3)),
    "sm": (2, lambda flow, y: objectives.sm(flow, y)),
    "dsm": (3, lambda flow, y: objectives.dsm(flow, y, generator=_seeded(5))),
}


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", PATHS)
def test_jet_paths_equal_the_autograd_paths(monkeypatch, name):
    # Same loss and same parameter gradients with and without the jets (skebflow.objectives._jets).
    n_blocks, loss_fn = PATHS[name]
    flow = random_flow("fc", 5, seed=4, n_blocks=n_blocks)
    y = torch.randn(7, 5, generator=_seeded(3), dtype=torch.float64)
    jet_loss, jet_grads = _loss_and_grads(flow, lambda: loss_fn(flow, y))
    monkeypatch.setattr(score_matching, "supports_jet", lambda model: False)
    ref_loss, ref_grads = _loss_and_grads(flow, lambda: loss_fn(flow, y))
    torch.testing.assert_close(jet_loss, ref_loss)
    for a, b in zip(jet_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_sm_jet_path_under_no_grad_is_detached():
    flow = random_flow("fc", 5, seed=5)
    y = torch.randn(7, 5, generator=_seeded(3), dtype=torch.float64)
    with torch.no_grad():
        loss = objectives.sm(flow, y)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, objectives.sm(flow, y).detach())
