"""The image flows of skebflow.nn._image: the paper's CNN (``build_conv``) and a Glow.

Checks that they are normalized densities (the change-of-variables formula through the
multi-scale split, and an importance-sampling integral on a 1×2×2 image), that they invert
exactly, and that the energy and every score objective compute no determinant.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from skebflow.nn._conv import Conv1x1, Conv2d
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._image import build_conv, build_glow
from skebflow.objectives._jets import supports_jet
from skebflow.objectives._registry import SCORE_OBJECTIVES, bind_objective
from tests.helpers import assert_change_of_variables, perturb_

DTYPE = torch.float64


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _conv(shape: tuple[int, int, int], seed: int = 0, **options: object) -> EnergyFlow:
    options = {"n_blocks": 2, "kernel_size": 3, **options}
    flow = build_conv(shape, generator=_seeded(seed), **options).to(DTYPE)
    perturb_(flow, _seeded(seed + 100), 0.15)
    return flow


def _glow(shape: tuple[int, int, int], seed: int = 0, **options: object) -> EnergyFlow:
    options = {"n_levels": 2, "steps_per_level": 2, "hidden_channels": 8, **options}
    flow = build_glow(shape, generator=_seeded(seed), **options).to(DTYPE)
    perturb_(flow, _seeded(seed + 100), 0.15)
    return flow


FLOWS = {
    "conv": lambda: _conv((2, 4, 4)),
    "conv-7x7": lambda: _conv((1, 4, 4), seed=1, kernel_size=7, convs_per_block=1),
    "glow-split": lambda: _glow((1, 4, 4)),
    "glow-rgb": lambda: _glow((3, 2, 2), seed=2, n_levels=1),
}


def _points(flow: EnergyFlow, n: int, seed: int) -> Tensor:
    return torch.randn(n, *flow.event_shape, generator=_seeded(seed), dtype=DTYPE)


def test_builders_layouts_and_defaults():
    conv = build_conv((3, 32, 32))
    names = [type(layer).__name__ for layer in conv.layers]
    assert names.count("Conv2d") == 6 and names.count("Squeeze") == 2
    assert names.count("SmoothLeakyReLU") == 5 and names[-1] == "Conv2d"
    assert {layer.kernel_size for layer in conv.layers if isinstance(layer, Conv2d)} == {7}
    assert conv.latent_shape == (48, 8, 8)
    assert conv.layers[0].weight.dtype == torch.float32
    assert supports_jet(conv)
    glow = build_glow((1, 28, 28), generator=_seeded(0))
    names = [type(layer).__name__ for layer in glow.layers]
    assert names.count("Split") == 1 and names.count("ConvAffineCoupling") == 8
    assert glow.latent_event_shape == (8, 7, 7) and glow.latent_shape == (784,)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_conv((1, 6, 6))
    with pytest.raises(ValueError, match="divisible by 8"):
        build_glow((1, 28, 28), n_levels=3)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_conv((28, 28))


def test_builders_start_near_the_identity():
    conv = build_conv((2, 4, 4), n_blocks=2, kernel_size=3).double()
    assert float(conv.log_normalizer().detach()) == 0.0  # every kernel is a centred delta
    glow = build_glow((1, 4, 4), generator=_seeded(0)).double().eval()
    y = _points(glow, 3, seed=0)
    _, ladj = glow.transform(y)  # couplings start at the identity
    assert float(ladj.detach().abs().max()) == 0.0
    assert abs(float(glow.log_normalizer().detach())) < 1e-4  # float32 rotations, ActNorm at zero


@pytest.mark.parametrize("name", FLOWS)
def test_log_prob_is_the_change_of_variables_density(name):
    flow = FLOWS[name]()
    y = _points(flow, 2, seed=1)
    assert_change_of_variables(flow, y)
    with torch.no_grad():  # the cached-factor path gives the same log-normalizer
        cached = flow.log_normalizer()
    torch.testing.assert_close(cached, flow.log_normalizer().detach())


@pytest.mark.parametrize("name", FLOWS)
def test_inverse_and_sampling(name):
    flow = FLOWS[name]()
    y = _points(flow, 5, seed=2)
    z, _ = flow.transform(y)
    assert z.shape == (5, *flow.latent_shape)
    assert float((flow.inverse(z) - y).abs().max().detach()) < 1e-8
    samples = flow.sample(4, generator=_seeded(3))
    assert samples.shape == (4, *flow.event_shape)
    assert torch.isfinite(flow.log_prob(samples)).all()


@pytest.mark.parametrize(
    "factory",
    [
        lambda: _conv((1, 2, 2), seed=4),
        lambda: _glow((1, 2, 2), seed=5, n_levels=1),
    ],
)
def test_density_integrates_to_one_on_a_1x2x2_image(factory):
    """Importance sampling from a heavy-tailed (Student t) proposal fitted to samples."""
    flow = factory()
    d, nu, n = 4, 5, 200_000
    generator = _seeded(6)
    with torch.no_grad():
        fit = flow.sample(4000, generator=generator).flatten(1)
        mean, cov = fit.mean(0), 1.5 * torch.cov(fit.T)
        chol = torch.linalg.cholesky(cov)
        gauss = torch.randn(n, d, generator=generator, dtype=DTYPE)
        chi2 = torch.randn(n, nu, generator=generator, dtype=DTYPE).pow(2).sum(1)
        x = mean + (gauss @ chol.T) / torch.sqrt(chi2 / nu).unsqueeze(1)
        maha = torch.cholesky_solve((x - mean).unsqueeze(-1), chol).squeeze(-1)
        maha = ((x - mean) * maha).sum(1)
        log_q = (
            math.lgamma((nu + d) / 2)
            - math.lgamma(nu / 2)
            - 0.5 * d * math.log(nu * math.pi)
            - torch.log(torch.diagonal(chol)).sum()
            - 0.5 * (nu + d) * torch.log1p(maha / nu)
        )
        weights = torch.exp(flow.log_prob(x.reshape(n, *flow.event_shape)) - log_q)
    estimate, error = float(weights.mean()), float(weights.std() / math.sqrt(n))
    assert error < 0.005
    assert abs(estimate - 1.0) < 5 * error


def _raise(*args: object, **kwargs: object) -> None:
    raise AssertionError("a determinant or a factorization was computed")


DETERMINANT_ROUTINES = [
    (torch.linalg, "slogdet"),
    (torch.linalg, "det"),
    (torch.linalg, "lu_factor"),
    (torch.linalg, "lu_factor_ex"),
    (torch.linalg, "lu"),
    (torch.linalg, "lu_solve"),
    (torch.linalg, "solve"),
    (torch.linalg, "inv"),
    (torch, "slogdet"),
    (torch, "logdet"),
    (torch, "det"),
]


@pytest.mark.parametrize("name", ["conv", "glow-split"])
def test_energy_and_score_objectives_compute_no_determinant(monkeypatch, name):
    flow = FLOWS[name]()
    y = _points(flow, 3, seed=7)
    for module, routine in DETERMINANT_ROUTINES:
        monkeypatch.setattr(module, routine, _raise)
    assert torch.isfinite(flow.energy(y)).all()
    for objective in SCORE_OBJECTIVES:
        flow.zero_grad()
        loss = bind_objective(objective)(flow, y, _seeded(8))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)
    with pytest.raises(AssertionError, match="determinant"):
        bind_objective("ml")(flow, y, None)


def test_ml_gradient_reaches_every_constant_jacobian_layer():
    flow = _glow((1, 4, 4), seed=9)
    flow.zero_grad()
    bind_objective("ml")(flow, _points(flow, 3, seed=9), None).backward()
    for layer in flow.layers:
        if isinstance(layer, Conv1x1):
            assert float(layer.weight.grad.abs().max()) > 0
