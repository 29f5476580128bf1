"""EnergyFlow and the architecture builders: normalization, closed forms, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skebflow.nn._architectures import ARCHITECTURES, build_coupling, build_fc
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._linear import Dense
from tests.helpers import random_flow

ARCH_OPTIONS = {
    "fc": {"n_blocks": 2},
    "fc-residual": {"n_blocks": 2, "residual": True},
    "coupling": {"n_blocks": 2, "hidden_features": 8},
    "spline": {"n_blocks": 2, "hidden_features": 8, "bound": 3.0},
    "autoregressive": {"n_blocks": 2, "hidden_features": 8, "bound": 3.0},
}


def flow_for(key: str, features: int, seed: int = 0, scale: float = 0.3) -> EnergyFlow:
    architecture = key.split("-")[0]
    return random_flow(architecture, features, seed=seed, scale=scale, **ARCH_OPTIONS[key])


def test_architectures_registry():
    assert set(ARCHITECTURES) >= {"fc", "coupling", "spline"}


@pytest.mark.parametrize("key", ARCH_OPTIONS)
def test_log_prob_is_minus_energy_minus_log_normalizer(key):
    flow = flow_for(key, 3)
    y = torch.randn(7, 3, dtype=torch.float64)
    expected = -flow.energy(y) - flow.log_normalizer()
    assert torch.allclose(flow.log_prob(y), expected)
    assert torch.allclose(flow.log_prob(y, flow.log_normalizer()), expected)


@pytest.mark.parametrize("key", ARCH_OPTIONS)
def test_density_integrates_to_one_in_1d(key):
    flow = flow_for(key, 1)
    grid = torch.linspace(-80.0, 80.0, 80001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    mass = torch.trapezoid(density, grid[:, 0])
    assert abs(float(mass) - 1.0) < 1e-3


@pytest.mark.parametrize("key", ARCH_OPTIONS)
def test_density_integrates_to_one_in_2d(key):
    flow = flow_for(key, 2, scale=0.25)
    axis = torch.linspace(-30.0, 30.0, 1201, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp().reshape(len(axis), len(axis))
    mass = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis)
    assert abs(float(mass) - 1.0) < 1e-3


def test_dense_only_flow_equals_closed_form_gaussian():
    torch.manual_seed(0)
    flow = EnergyFlow([Dense(3), Dense(3)], features=3).double()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator).double())
    w1, b1 = flow.layers[0].weight.detach(), flow.layers[0].bias.detach()
    w2, b2 = flow.layers[1].weight.detach(), flow.layers[1].bias.detach()
    a, c = w2 @ w1, w2 @ b1 + b2  # z = a y + c
    mean = -torch.linalg.solve(a, c)
    covariance = torch.linalg.inv(a.T @ a)
    reference = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance)
    y = torch.randn(10, 3, dtype=torch.float64, generator=generator)
    assert torch.allclose(flow.log_prob(y), reference.log_prob(y), atol=1e-10)


@pytest.mark.parametrize("key", ARCH_OPTIONS)
def test_sample_equals_inverse_of_base_draws(key):
    flow = flow_for(key, 4)
    samples = flow.sample(16, generator=torch.Generator().manual_seed(3))
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(samples, flow.inverse(z))
        assert torch.allclose(flow.transform(samples)[0], z, atol=1e-8)


@pytest.mark.parametrize("key", ARCH_OPTIONS)
def test_samples_follow_the_density(key):
    """E_p[log p] from samples matches the grid value of -entropy in 1-D."""
    flow = flow_for(key, 1)
    with torch.no_grad():
        samples = flow.sample(20000, generator=torch.Generator().manual_seed(0))
        log_p = flow.log_prob(samples)
        grid = torch.linspace(-80.0, 80.0, 80001, dtype=torch.float64)[:, None]
        log_p_grid = flow.log_prob(grid)
    neg_entropy = torch.trapezoid(log_p_grid.exp() * log_p_grid, grid[:, 0])
    stderr = log_p.std() / math.sqrt(len(log_p))
    assert abs(float(log_p.mean() - neg_entropy)) < 5 * float(stderr)


def test_coupling_with_one_feature_substitutes_an_elementwise_layer():
    flow = build_coupling(1, n_blocks=2)
    names = [type(layer).__name__ for layer in flow.layers]
    assert "AffineCoupling" not in names and "SmoothLeakyReLU" in names


def test_builders_reject_zero_blocks():
    with pytest.raises(ValueError, match="n_blocks"):
        build_fc(2, n_blocks=0)
    with pytest.raises(ValueError, match="n_blocks"):
        build_coupling(2, n_blocks=0)


def test_same_generator_same_flow_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a = build_coupling(3, generator=torch.Generator().manual_seed(0))
    b = build_coupling(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.random.get_rng_state())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@settings(max_examples=20, deadline=None)
@given(
    key=st.sampled_from(sorted(ARCH_OPTIONS)),
    features=st.integers(1, 6),
    n=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_property_flow_invertible_and_batch_invariant(key, features, n, seed):
    flow = flow_for(key, features, seed=seed)
    y = torch.randn(n, features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        z, _ = flow.transform(y)
        assert torch.allclose(flow.inverse(z), y, atol=1e-8)
        log_p = flow.log_prob(y)
        for i in range(n):
            assert torch.allclose(flow.log_prob(y[i : i + 1])[0], log_p[i], atol=1e-12)


DETERMINANT_ROUTINES = [
    (torch.linalg, "slogdet"),
    (torch.linalg, "det"),
    (torch, "slogdet"),
    (torch, "logdet"),
    (torch, "det"),
    (torch.linalg, "lu_factor"),
    (torch.linalg, "lu_factor_ex"),
    (torch.linalg, "inv"),
    (torch.linalg, "solve"),
]


@pytest.mark.parametrize("key", ARCH_OPTIONS)
@pytest.mark.parametrize("objective", ["sm", "ssm", "dsm", "fdssm"])
def test_energy_and_score_objectives_never_compute_a_determinant(monkeypatch, key, objective):
    from skebflow.objectives._registry import OBJECTIVES

    flow = flow_for(key, 3)
    y = torch.randn(8, 3, dtype=torch.float64)

    def forbidden(*args, **kwargs):
        raise AssertionError("a determinant or matrix factorization was computed")

    for module, name in DETERMINANT_ROUTINES:
        monkeypatch.setattr(module, name, forbidden)
    with pytest.raises(AssertionError, match="determinant"):
        flow.log_normalizer()  # the patch is effective
    flow.energy(y)
    loss = OBJECTIVES[objective](flow, y, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    ("architecture", "image_shape", "whiten"),
    [
        *[
            (name, None, whiten)
            for name in ("autoregressive", "fc", "coupling", "spline")
            for whiten in (False, True)
        ],
        ("conv", (3, 4, 4), False),  # image flows are never whitened
        ("glow", (3, 4, 4), False),
    ],
)
def test_every_architecture_builds_on_the_meta_device_as_on_the_cpu(
    architecture, image_shape, whiten
):
    """Model files are checked against a flow built on "meta" (nothing allocated) before
    the real one is built: both must have the same structure, names, shapes and dtypes."""
    from skebflow.estimators._settings import build_flow

    n_features = 48 if image_shape else 5

    def build() -> torch.nn.Module:
        generator = torch.Generator().manual_seed(0)
        return build_flow(
            architecture,
            n_features,
            n_blocks=2,
            hidden_features=8,
            image_shape=image_shape,
            generator=generator,
            whiten=whiten,
        ).to(torch.float64)

    with torch.device("meta"):
        skeleton = build()
    flow = build()
    meta = skeleton.state_dict()
    assert all(value.is_meta for value in meta.values())
    assert {k: (v.shape, v.dtype) for k, v in meta.items()} == {
        k: (v.shape, v.dtype) for k, v in flow.state_dict().items()
    }
    assert [type(m) for m in skeleton.modules()] == [type(m) for m in flow.modules()]
