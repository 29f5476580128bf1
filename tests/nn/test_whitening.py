"""The fixed whitening layer and a flow trained behind it."""

from __future__ import annotations

import math

import pytest
import torch

from skebflow.nn._architectures import build_coupling
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._linear import Dense, Whitening
from skebflow.objectives import bind_objective
from tests.helpers import perturb_


def correlated(n: int = 2000, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.tensor(
        [[3.0, 0.0, 0.0], [2.0, 0.5, 0.0], [-1.0, 0.3, 0.05]], dtype=torch.float64
    )
    return torch.randn(n, 3, generator=generator, dtype=torch.float64) @ mixing.T + 4.0


def test_fit_whitens_the_data_symmetrically():
    x = correlated()
    layer = Whitening(3).double().fit(x)
    u = layer.map(x)
    assert torch.allclose(u.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(torch.cov(u.T), torch.eye(3, dtype=torch.float64), atol=1e-8)
    # ZCA: the symmetric square root, the whitening closest to the identity.
    assert torch.allclose(layer.weight, layer.weight.T, atol=1e-10)
    assert torch.allclose(layer.weight @ layer.inverse_weight, torch.eye(3).double(), atol=1e-10)


def test_log_det_is_the_weights_determinant():
    layer = Whitening(3).double().fit(correlated())
    assert math.isclose(
        float(layer.logabsdet()), float(torch.linalg.slogdet(layer.weight)[1]), abs_tol=1e-10
    )


def test_whitening_uncorrelated_standardized_data_is_nearly_the_identity():
    x = torch.randn(20_000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    layer = Whitening(3).double().fit((x - x.mean(0)) / x.std(0))
    assert torch.allclose(layer.weight, torch.eye(3, dtype=torch.float64), atol=0.03)


def test_degenerate_directions_are_floored_not_blown_up():
    x = correlated()
    x = torch.cat([x, x[:, :1] + x[:, 1:2]], dim=1)  # an exactly collinear column
    layer = Whitening(4).double().fit(x, min_variance=1e-4)
    singular = torch.linalg.svdvals(layer.weight)
    variances = torch.linalg.eigvalsh(torch.cov(x.T))
    # No direction is scaled by more than (1e-4 · mean variance)^(-1/2).
    assert float(singular.max()) <= (1e-4 * float(variances.mean())) ** -0.5 * (1 + 1e-9)
    assert torch.isfinite(layer.logabsdet())
    assert torch.allclose(layer.inverse(layer.map(x)), x, atol=1e-8)


def test_noise_adds_its_variance():
    x = correlated()
    plain, noisy = Whitening(3).double().fit(x), Whitening(3).double().fit(x, noise=0.5)
    expected = torch.linalg.inv(torch.cov(x.T) + 0.25 * torch.eye(3, dtype=torch.float64))
    assert torch.allclose(noisy.weight @ noisy.weight, expected, atol=1e-10)
    assert not torch.allclose(plain.weight, noisy.weight)


def test_fit_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="at least 2 rows of 3 features"):
        Whitening(3).fit(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 2 rows"):
        Whitening(3).fit(torch.zeros(1, 3))


def test_the_whitening_is_a_buffer_no_optimizer_moves():
    layer = Whitening(3)
    assert list(layer.parameters()) == []
    assert {"mean", "weight", "inverse_weight", "log_det"} <= set(layer.state_dict())


def whitened_flow(seed: int = 0) -> tuple[EnergyFlow, torch.Tensor]:
    x = correlated(seed=seed)
    body = build_coupling(3, generator=torch.Generator().manual_seed(seed)).double()
    perturb_(body, torch.Generator().manual_seed(seed + 1), scale=0.3)
    whitening = Whitening(3).double().fit(x)
    return EnergyFlow([whitening, *body.layers], features=3), x


def test_a_whitened_flow_is_the_body_at_the_whitened_point_plus_the_constant():
    flow, x = whitened_flow()
    body, u = flow.after_whitening(x[:50])
    assert len(body.layers) == len(flow.layers) - 1
    assert all(a is b for a, b in zip(body.layers, list(flow.layers)[1:], strict=True))
    expected = body.log_prob(u) + flow.layers[0].logabsdet()
    assert torch.allclose(flow.log_prob(x[:50]), expected, atol=1e-10)
    assert torch.allclose(flow.inverse(flow.transform(x[:50])[0]), x[:50], atol=1e-8)


def test_a_flow_without_whitening_is_its_own_body():
    flow, x = whitened_flow()
    plain = EnergyFlow(list(flow.layers)[1:], features=3)
    body, y = plain.after_whitening(x)
    assert body is plain and y is x


@pytest.mark.parametrize("objective", ["ml", "ssm", "dsm", "fdssm"])
def test_objectives_are_measured_in_the_whitened_coordinates(objective):
    flow, x = whitened_flow()
    body, u = flow.after_whitening(x[:64])
    loss = bind_objective(objective)
    whitened = loss(flow, x[:64], torch.Generator().manual_seed(3))
    direct = loss(body, u, torch.Generator().manual_seed(3))
    assert torch.allclose(whitened, direct, atol=1e-10)
    # ... which differs from the loss measured in the data's own coordinates (score
    # matching is not invariant to linear maps), except for ML.
    if objective != "ml":
        unwhitened = bind_objective(objective)
        composite = _without_whitening_hook(unwhitened, flow, x[:64])
        assert not torch.allclose(direct, composite, atol=1e-3)


def _without_whitening_hook(loss, flow: EnergyFlow, x: torch.Tensor) -> torch.Tensor:
    """The loss of the whole flow at ``x`` (the whitening as an ordinary first layer)."""
    dense = Dense(3).double()
    whitening = flow.layers[0]
    with torch.no_grad():
        dense.weight.copy_(whitening.weight)
        dense.bias.copy_(-whitening.weight @ whitening.mean)
    composite = EnergyFlow([dense, *list(flow.layers)[1:]], features=3)
    return loss(composite, x, torch.Generator().manual_seed(3))
