"""Invertible layers: inverses, log-determinants, constant Jacobians, gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skebflow.nn._activations import SmoothLeakyReLU
from skebflow.nn._autoregressive import MaskedAutoregressiveSpline
from skebflow.nn._base import Layer
from skebflow.nn._coupling import AffineCoupling
from skebflow.nn._linear import ActNorm, Dense, Permutation, Whitening
from skebflow.nn._splines import RationalQuadraticCoupling
from tests.helpers import perturb_


def _correlated(n: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """Rows with correlated columns of unequal scales (what a whitening is fitted to)."""
    mixing = torch.randn(features, features, generator=generator, dtype=torch.float64)
    return torch.randn(n, features, generator=generator, dtype=torch.float64) @ mixing + 1.0


LAYERS = {
    "dense": lambda d, g: Dense(d),
    "dense-orthogonal": lambda d, g: Dense(d, init="orthogonal", generator=g),
    "actnorm": lambda d, g: ActNorm(d),
    "permutation": lambda d, g: Permutation(d),
    "whitening": lambda d, g: Whitening(d).double().fit(_correlated(256, d, g)),
    "smooth-leaky-relu": lambda d, g: SmoothLeakyReLU(0.3),
    "smooth-leaky-relu-residual": lambda d, g: SmoothLeakyReLU(0.2, residual=True),
    "coupling-even": lambda d, g: AffineCoupling(d, parity=0, hidden_features=(8,), generator=g),
    "coupling-odd": lambda d, g: AffineCoupling(d, parity=1, hidden_features=(8, 8), generator=g),
    # bound 2.5: the inputs (2 N(0, 1)) fall both inside the splines' box and in the tails.
    "spline-even": lambda d, g: RationalQuadraticCoupling(
        d, parity=0, hidden_features=(8,), n_bins=5, bound=2.5, generator=g
    ),
    "spline-odd": lambda d, g: RationalQuadraticCoupling(
        d, parity=1, hidden_features=(8, 8), bound=2.5, generator=g
    ),
    "autoregressive-spline": lambda d, g: MaskedAutoregressiveSpline(
        d, hidden_features=(8, 8), n_bins=5, bound=2.5, generator=g
    ),
}


def make_layer(name: str, features: int = 4, seed: int = 0) -> Layer:
    generator = torch.Generator().manual_seed(seed)
    layer = LAYERS[name](features, generator).double()
    perturb_(layer, generator, scale=0.5)
    return layer


def inputs(n: int, features: int, seed: int = 1) -> torch.Tensor:
    return 2.0 * torch.randn(n, features, generator=torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("name", LAYERS)
def test_inverse_inverts_forward(name):
    layer = make_layer(name)
    x = inputs(64, 4)
    y, _ = layer(x)
    assert torch.allclose(layer.inverse(y), x, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", LAYERS)
def test_logabsdet_matches_autograd_jacobian(name):
    layer = make_layer(name)
    x = inputs(5, 4)
    _, ladj = layer(x)
    for i in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[i])
        expected = torch.linalg.slogdet(jacobian)[1]
        assert torch.allclose(ladj[i], expected, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in LAYERS if LAYERS[n](2, None).constant_jacobian])
def test_constant_jacobian_layers_are_input_independent(name):
    layer = make_layer(name)
    x1, x2 = inputs(3, 4, seed=1), 5.0 * inputs(3, 4, seed=2)
    _, ladj1 = layer(x1)
    _, ladj2 = layer(x2)
    assert torch.allclose(ladj1, ladj2)
    assert torch.allclose(ladj1, layer.logabsdet().expand(3))
    assert torch.equal(layer.map(x1), layer(x1)[0])


@pytest.mark.parametrize("name", [n for n in LAYERS if not LAYERS[n](2, None).constant_jacobian])
def test_nonconstant_layers_really_depend_on_the_input(name):
    layer = make_layer(name)
    _, ladj = layer(inputs(8, 4))
    assert ladj.std() > 1e-6


@pytest.mark.parametrize("name", LAYERS)
def test_gradcheck(name):
    layer = make_layer(name, features=3)
    x = inputs(4, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: layer(v), (x,), atol=1e-6)


@pytest.mark.parametrize("name", ["smooth-leaky-relu", "coupling-even"])
def test_second_derivatives_exist(name):
    """Score matching differentiates the energy twice: gradgradcheck must pass."""
    layer = make_layer(name, features=3)
    x = inputs(3, 3).requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda v: layer(v)[1], (x,), atol=1e-6)


def test_smooth_leaky_relu_inverse_at_extremes():
    layer = SmoothLeakyReLU(0.3)
    x = torch.tensor([[-1e4], [-50.0], [-1e-8], [0.0], [1e-8], [50.0], [1e4]], dtype=torch.float64)
    y, _ = layer(x)
    assert torch.allclose(layer.inverse(y), x, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("residual", [False, True])
def test_smooth_leaky_relu_inverse_in_float32(residual):
    layer = SmoothLeakyReLU(0.3, residual=residual)
    x = torch.linspace(-30, 30, 1001, dtype=torch.float32)[:, None]
    y, _ = layer(x)
    assert torch.allclose(layer.inverse(y), x, rtol=1e-5, atol=1e-5)


def test_smooth_leaky_relu_rejects_non_finite_inverse():
    with pytest.raises(FloatingPointError):
        SmoothLeakyReLU().inverse(torch.tensor([[float("nan")]], dtype=torch.float64))


def test_smooth_leaky_relu_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        SmoothLeakyReLU(1.5)


def test_dense_inverse_reuses_factorization_until_weight_changes():
    layer = make_layer("dense").requires_grad_(False)
    y = inputs(4, 4)
    with torch.no_grad():
        first = layer.inverse(y)
        cached = layer._lu_cache
        assert torch.allclose(layer.map(first), y)
        layer.inverse(y)
        assert layer._lu_cache is cached
        layer.weight.mul_(2.0)
        second = layer.inverse(y)
        assert layer._lu_cache is not cached
        assert torch.allclose(layer.map(second), y)


def test_dense_inverse_follows_a_fused_optimizer_step():
    # Adam(fused=True) updates weights in place without bumping their version counter:
    # a factorization cached by version would be stale (it made SML sample from the
    # initial weights during training).
    layer = make_layer("dense")
    y = inputs(4, 4)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1, fused=True)
    with torch.no_grad():
        layer.inverse(y)
    layer.weight.grad = torch.ones_like(layer.weight)
    layer.bias.grad = torch.ones_like(layer.bias)
    version = layer.weight._version
    optimizer.step()
    with torch.no_grad():
        assert torch.allclose(layer.map(layer.inverse(y)), y)
    assert layer.weight._version == version or layer._lu_cache is None


def test_dense_inverse_is_differentiable_when_weights_need_grad():
    layer = make_layer("dense")
    layer.inverse(inputs(4, 4)).sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_dense_singular_weight_is_reported():
    layer = Dense(3).double()
    with torch.no_grad():
        layer.weight.zero_()
        with pytest.raises(FloatingPointError, match="singular"):
            layer.inverse(inputs(2, 3))


def test_actnorm_initializes_from_first_batch_only():
    layer = ActNorm(3).double()
    x = 3.0 * inputs(256, 3) + 2.0
    y, _ = layer(x)
    assert torch.allclose(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(y.std(0), torch.ones(3, dtype=torch.float64), atol=1e-10)
    before = layer.log_scale.detach().clone()
    layer(10 * x)
    assert torch.equal(layer.log_scale.detach(), before)


def test_coupling_needs_two_features():
    with pytest.raises(ValueError, match="at least 2"):
        AffineCoupling(1)


def test_layers_never_touch_the_global_generator():
    state = torch.random.get_rng_state()
    AffineCoupling(6, generator=torch.Generator().manual_seed(0))
    Dense(6, init="orthogonal", generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.random.get_rng_state())


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(LAYERS)),
    features=st.integers(2, 7),
    n=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_property_invertible_and_batch_invariant(name, features, n, seed):
    layer = make_layer(name, features=features, seed=seed)
    x = inputs(n, features, seed=seed + 1)
    y, ladj = layer(x)
    assert torch.allclose(layer.inverse(y), x, atol=1e-8, rtol=0)
    for i in range(n):
        yi, ladj_i = layer(x[i : i + 1])
        assert torch.allclose(yi[0], y[i], atol=1e-12) and torch.allclose(ladj_i[0], ladj[i])
