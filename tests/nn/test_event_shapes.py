"""The layer contract beyond (n, D): image-shaped events and a multi-scale split.

A toy channel-mixing layer (a 1×1 "convolution" written as a dense map over the channel
dimension) stands in for the image layers: it is a constant-Jacobian layer with only
``map``/``logabsdet``/``inverse``, so it exercises the generic affine derivative rules.
Every score path (the Taylor-mode jets, the first-order tangents with adjoints, and the
objectives built on them) must agree with plain autograd on such flows.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from skebflow import objectives
from skebflow.nn._activations import SmoothLeakyReLU
from skebflow.nn._base import ConstantJacobianLayer, Split
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._linear import Dense
from skebflow.objectives._jets import supports_jet
from tests.helpers import assert_fast_paths_match_autograd, assert_jets_match_autograd, perturb_

DTYPE = torch.float64


class ChannelDense(ConstantJacobianLayer):
    """``y[:, o] = Σ_c W[o, c] x[:, c] + b[o]`` at every position (a 1×1 convolution)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.positions = 1

    def output_shape(self, event_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.positions = math.prod(event_shape[1:])
        return tuple(event_shape)

    def _bias(self, x: Tensor) -> Tensor:
        return self.bias.reshape(1, -1, *([1] * (x.ndim - 2)))

    def map(self, x: Tensor) -> Tensor:
        return torch.einsum("oc,nc...->no...", self.weight, x) + self._bias(x)

    def logabsdet(self) -> Tensor:
        return self.positions * torch.linalg.slogdet(self.weight)[1]

    def inverse(self, y: Tensor) -> Tensor:
        return torch.einsum("oc,nc...->no...", torch.linalg.inv(self.weight), y - self._bias(y))


def _image_flow(seed: int = 0) -> EnergyFlow:
    layers = [
        ChannelDense(4),
        SmoothLeakyReLU(0.3),
        ChannelDense(4),
        Split(2),
        ChannelDense(2),
        SmoothLeakyReLU(0.5, residual=True),
        ChannelDense(2),
    ]
    flow = EnergyFlow(layers, event_shape=(4, 3, 2)).to(DTYPE)
    perturb_(flow, torch.Generator().manual_seed(seed), 0.4)
    return flow


def _tabular_split_flow(seed: int = 1) -> EnergyFlow:
    layers = [Dense(5), SmoothLeakyReLU(0.3), Dense(5), Split(3), Dense(3), SmoothLeakyReLU()]
    flow = EnergyFlow(layers, features=5).to(DTYPE)
    perturb_(flow, torch.Generator().manual_seed(seed), 0.4)
    return flow


def _image_flow_without_split(seed: int = 2) -> EnergyFlow:
    layers = [ChannelDense(3), SmoothLeakyReLU(0.3), ChannelDense(3)]
    flow = EnergyFlow(layers, event_shape=(3, 2, 2)).to(DTYPE)
    perturb_(flow, torch.Generator().manual_seed(seed), 0.4)
    return flow


FLOWS = {
    "image-split": _image_flow,
    "tabular-split": _tabular_split_flow,
    "image": _image_flow_without_split,
}


def _points(flow: EnergyFlow, n: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *flow.event_shape, generator=generator, dtype=DTYPE)


@pytest.mark.parametrize("name", FLOWS)
def test_log_prob_is_the_change_of_variables_density(name):
    """``-E - log Z`` equals ``log N(z) + log|det ∂z/∂y|`` with an autograd Jacobian."""
    flow = FLOWS[name]()
    y = _points(flow, 3, seed=0)
    d = flow.features
    for row in y:

        def latent(t: Tensor) -> Tensor:
            return flow.transform(t.reshape(1, *flow.event_shape))[0].flatten()

        z = latent(row.flatten())
        jacobian = torch.autograd.functional.jacobian(latent, row.flatten())
        expected = -0.5 * (z @ z) - 0.5 * d * math.log(2 * math.pi)
        expected = expected + torch.linalg.slogdet(jacobian)[1]
        torch.testing.assert_close(flow.log_prob(row.unsqueeze(0))[0], expected)


@pytest.mark.parametrize("name", FLOWS)
def test_inverse_and_sampling_keep_the_event_shape(name):
    flow = FLOWS[name]()
    y = _points(flow, 6, seed=1)
    z, _ = flow.transform(y)
    assert z.shape == (6, *flow.latent_shape)
    torch.testing.assert_close(flow.inverse(z), y)
    samples = flow.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, *flow.event_shape)
    assert torch.isfinite(flow.log_prob(samples)).all()


@pytest.mark.parametrize("name", FLOWS)
def test_jets_and_tangents_match_autograd(name):
    flow = FLOWS[name]()
    assert supports_jet(flow)
    y = _points(flow, 3, seed=2)
    v = torch.randn(2, *y.shape, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    assert_jets_match_autograd(flow, y, v)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


OBJECTIVES = {
    "sm": lambda flow, y: objectives.sm(flow, y),
    "ssm": lambda flow, y: objectives.ssm(flow, y, generator=_seeded(2), n_slices=2),
    "dsm": lambda flow, y: objectives.dsm(flow, y, generator=_seeded(5)),
    "fdssm": lambda flow, y: objectives.fdssm(flow, y, generator=_seeded(6)),
    "ml": lambda flow, y: objectives.ml(flow, y),
}


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("name", FLOWS)
def test_objectives_take_the_same_values_and_gradients_on_every_path(monkeypatch, name, objective):
    """The fast paths and plain autograd give the same loss and parameter gradients."""
    flow = FLOWS[name]()
    y = _points(flow, 4, seed=4)
    assert_fast_paths_match_autograd(monkeypatch, flow, y, OBJECTIVES[objective])


def test_split_needs_room_in_the_first_event_dimension():
    with pytest.raises(ValueError, match="needs more than 2 entries"):
        EnergyFlow([Split(2)], event_shape=(2, 3))
    with pytest.raises(ValueError, match="exactly one of features and event_shape"):
        EnergyFlow([], features=2, event_shape=(2,))
