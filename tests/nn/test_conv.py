"""The image layers of skebflow.nn._conv: exact operators, determinants, inverses, caches.

Every determinant is checked against ``slogdet`` of an operator built independently (by
applying the layer to the identity basis), and every score path of a flow made of these
layers against plain autograd (the contract of ``tests/nn/test_event_shapes.py``).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from skebflow import objectives
from skebflow.nn._activations import SmoothLeakyReLU
from skebflow.nn._base import Split
from skebflow.nn._conv import Conv1x1, Conv2d, conv_operator
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._shapes import ActNorm2d, Squeeze
from skebflow.objectives._jets import supports_jet
from tests.helpers import (
    assert_change_of_variables,
    assert_fast_paths_match_autograd,
    assert_jets_match_autograd,
    perturb_,
)

DTYPE = torch.float64


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _basis_operator(linear: Callable[[Tensor], Tensor], event_shape: tuple[int, ...]) -> Tensor:
    """The matrix of a linear map, from its images of the identity basis (one batch)."""
    d = math.prod(event_shape)
    basis = torch.eye(d, dtype=DTYPE).reshape(d, *event_shape)
    return linear(basis).reshape(d, d).mT


def _conv2d(channels: int, spatial: tuple[int, int], kernel: int, seed: int = 0) -> Conv2d:
    layer = Conv2d(channels, spatial, kernel_size=kernel).to(DTYPE)
    perturb_(layer, _seeded(seed), 0.3)
    return layer


CONV_CASES = [(2, (3, 4), 3), (1, (2, 3), 5), (3, (2, 2), 1), (2, (5, 3), 7)]


@pytest.mark.parametrize(("channels", "spatial", "kernel"), CONV_CASES)
def test_conv_operator_is_the_convolution(channels, spatial, kernel):
    layer = _conv2d(channels, spatial, kernel)
    expected = _basis_operator(
        lambda x: F.conv2d(x, layer.weight, padding=kernel // 2), (channels, *spatial)
    )
    torch.testing.assert_close(conv_operator(layer.weight, spatial), expected, rtol=0, atol=0)
    torch.testing.assert_close(layer.operator(), expected, rtol=0, atol=0)


def test_conv_operator_gradient():
    weight = torch.randn(2, 2, 3, 3, dtype=DTYPE, generator=_seeded(1)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: conv_operator(w, (3, 2)), (weight,))
    assert torch.autograd.gradgradcheck(lambda w: conv_operator(w, (2, 2)), (weight,))


@pytest.mark.parametrize(("channels", "spatial", "kernel"), CONV_CASES)
def test_conv_logabsdet_is_slogdet_of_the_operator(channels, spatial, kernel):
    layer = _conv2d(channels, spatial, kernel, seed=2)
    weight = layer.weight

    def explicit(w: Tensor) -> Tensor:
        operator = _basis_operator(
            lambda x: F.conv2d(x, w, padding=kernel // 2), (channels, *spatial)
        )
        return torch.linalg.slogdet(operator)[1]

    expected = explicit(weight)
    (expected_grad,) = torch.autograd.grad(expected, weight)
    value = layer.logabsdet()
    (grad,) = torch.autograd.grad(value, weight)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad, expected_grad)
    with torch.no_grad():
        torch.testing.assert_close(layer.logabsdet(), expected.detach())
    _, ladj = layer(torch.zeros(2, channels, *spatial, dtype=DTYPE))
    torch.testing.assert_close(ladj, expected.detach().expand(2), check_dtype=False)


@pytest.mark.parametrize(("channels", "spatial"), [(3, (2, 3)), (4, (1, 1)), (2, (3, 3))])
def test_conv1x1_logabsdet_is_hw_times_the_weight_determinant(channels, spatial):
    layer = Conv1x1(channels, spatial, generator=_seeded(3)).to(DTYPE)
    perturb_(layer, _seeded(4), 0.3)
    operator = _basis_operator(lambda x: layer.map(x), (channels, *spatial))
    expected = torch.linalg.slogdet(operator)[1]
    torch.testing.assert_close(layer.logabsdet(), expected)
    assert math.isclose(
        float(layer.logabsdet().detach()),
        math.prod(spatial) * float(torch.linalg.slogdet(layer.weight.detach())[1]),
        rel_tol=1e-12,
    )
    with torch.no_grad():
        torch.testing.assert_close(layer.logabsdet(), expected)


def test_actnorm2d_and_squeeze_determinants():
    actnorm = ActNorm2d(2, (3, 2)).to(DTYPE)
    x = 3.0 * torch.randn(32, 2, 3, 2, dtype=DTYPE, generator=_seeded(5)) + 1.0
    y = actnorm.map(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(2, dtype=DTYPE))
    torch.testing.assert_close(y.std((0, 2, 3)), torch.ones(2, dtype=DTYPE))
    operator = _basis_operator(lambda t: actnorm.map(t) - actnorm.map(0 * t), (2, 3, 2))
    torch.testing.assert_close(actnorm.logabsdet(), torch.linalg.slogdet(operator)[1])
    squeeze = Squeeze().to(DTYPE)
    operator = _basis_operator(squeeze.map, (2, 4, 2))
    assert sorted(operator.abs().sum(0).tolist()) == [1.0] * 16  # a permutation
    assert float(squeeze.logabsdet()) == 0.0
    pixel = torch.arange(16.0, dtype=DTYPE).reshape(1, 1, 4, 4)
    assert squeeze.map(pixel)[0, :, 1, 0].tolist() == [8.0, 9.0, 12.0, 13.0]


def _layers(seed: int = 6) -> list[torch.nn.Module]:
    layers = [
        _conv2d(2, (3, 4), 3, seed),
        _conv2d(1, (2, 2), 5, seed),
        Conv1x1(3, (2, 3), generator=_seeded(seed)).to(DTYPE),
        Conv1x1(3, (2, 3), bias=True, init="identity").to(DTYPE),
        ActNorm2d(2, (3, 4)).to(DTYPE),
        Squeeze().to(DTYPE),
    ]
    for layer in layers:
        perturb_(layer, _seeded(seed + 1), 0.3)
    return layers


def _input(layer: torch.nn.Module, seed: int) -> Tensor:
    shape = (2, 4, 2) if isinstance(layer, Squeeze) else (layer.channels, *layer.spatial_shape)
    return torch.randn(5, *shape, dtype=DTYPE, generator=_seeded(seed))


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("grad", [True, False])
def test_inverses_invert_to_1e8(index, grad):
    layer = _layers()[index]
    x = _input(layer, index)
    with torch.set_grad_enabled(grad):
        back = layer.inverse(layer.map(x))
    assert float((back - x).abs().max().detach()) < 1e-8


@pytest.mark.parametrize("factory", [lambda: _conv2d(2, (3, 3), 3), lambda: _layers()[2]])
def test_frozen_weights_cache_their_factors_per_version(factory):
    layer = factory()
    layer.weight.requires_grad_(False)
    first = layer.factors()
    assert layer.factors()[0] is first[0]
    x = _input(layer, 7)
    torch.testing.assert_close(layer.inverse(layer.map(x)), x)
    before = float(layer.logabsdet())
    with torch.no_grad():
        layer.weight.mul_(1.5)  # bumps the version
    assert layer.factors()[0] is not first[0]
    d = math.prod((layer.channels, *layer.spatial_shape))
    assert math.isclose(float(layer.logabsdet()), before + d * math.log(1.5), rel_tol=1e-10)
    torch.testing.assert_close(layer.inverse(layer.map(x)), x)
    clone = pickle.loads(pickle.dumps(layer))
    assert clone._lu_cache is None
    torch.testing.assert_close(clone.logabsdet(), layer.logabsdet())


def test_trainable_weights_never_cache():
    layer = _conv2d(2, (2, 2), 3)
    with torch.no_grad():
        layer.logabsdet()
    assert layer._lu_cache is None


def test_singular_layers():
    conv = Conv2d(1, (2, 2), kernel_size=3).to(DTYPE)
    one = Conv1x1(2, (2, 2), init="identity").to(DTYPE)
    with torch.no_grad():
        conv.weight.zero_()
        one.weight.copy_(torch.ones(2, 2))
    for layer in (conv, one):
        assert layer.logabsdet().item() == -math.inf
        with torch.no_grad():
            assert layer.logabsdet().item() == -math.inf
            with pytest.raises(FloatingPointError, match="singular"):
                layer.inverse(torch.zeros(1, layer.channels, 2, 2, dtype=DTYPE))


def test_shape_errors():
    with pytest.raises(ValueError, match="odd"):
        Conv2d(2, (3, 3), kernel_size=2)
    with pytest.raises(ValueError, match=r"built for events of shape \(2, 3, 3\)"):
        EnergyFlow([Conv2d(2, (3, 3))], event_shape=(2, 3, 4))
    with pytest.raises(ValueError, match="even"):
        EnergyFlow([Squeeze()], event_shape=(1, 3, 4))
    with pytest.raises(ValueError, match="init"):
        Conv1x1(2, (1, 1), init="random")
    assert EnergyFlow([Squeeze()], event_shape=(3, 2, 4)).latent_shape == (12, 1, 2)


def _image_flow(seed: int = 0) -> EnergyFlow:
    layers = [
        Conv2d(2, (4, 4), kernel_size=3),
        SmoothLeakyReLU(0.3),
        Squeeze(),
        ActNorm2d(8, (2, 2)),
        Conv1x1(8, (2, 2), generator=_seeded(seed)),
        SmoothLeakyReLU(0.5, residual=True),
        Split(3),
        Conv2d(3, (2, 2), kernel_size=5),
        SmoothLeakyReLU(0.3, residual=True),
        Conv2d(3, (2, 2), kernel_size=3),
    ]
    flow = EnergyFlow(layers, event_shape=(2, 4, 4)).to(DTYPE)
    perturb_(flow, _seeded(seed), 0.2)
    return flow


def _points(flow: EnergyFlow, n: int, seed: int) -> Tensor:
    return torch.randn(n, *flow.event_shape, generator=_seeded(seed), dtype=DTYPE)


def test_image_layers_flow_density_and_inverse():
    flow = _image_flow()
    y = _points(flow, 2, seed=1)
    assert_change_of_variables(flow, y)
    z, _ = flow.transform(y)
    assert float((flow.inverse(z) - y).abs().max().detach()) < 1e-8


def test_jets_and_tangents_match_autograd():
    flow = _image_flow(seed=3)
    assert supports_jet(flow)
    y = _points(flow, 2, seed=2)
    v = torch.randn(2, *y.shape, generator=_seeded(3), dtype=DTYPE)
    assert_jets_match_autograd(flow, y, v)


OBJECTIVES = {
    "sm": lambda flow, y: objectives.sm(flow, y),
    "ssm": lambda flow, y: objectives.ssm(flow, y, generator=_seeded(2), n_slices=2),
    "dsm": lambda flow, y: objectives.dsm(flow, y, generator=_seeded(5)),
    "fdssm": lambda flow, y: objectives.fdssm(flow, y, generator=_seeded(6)),
    "ml": lambda flow, y: objectives.ml(flow, y),
}


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objectives_take_the_same_values_and_gradients_on_every_path(monkeypatch, objective):
    flow = _image_flow(seed=4)
    y = _points(flow, 3, seed=4)
    assert_fast_paths_match_autograd(monkeypatch, flow, y, OBJECTIVES[objective])
