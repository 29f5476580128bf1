"""Rational-quadratic splines: identity start, tails, smoothness, and score-matching terms."""

from __future__ import annotations

import pytest
import torch

from skebflow.nn._architectures import build_spline
from skebflow.nn._splines import RationalQuadraticCoupling, _knots, rq_spline, rq_spline_inverse
from skebflow.objectives._registry import OBJECTIVES
from tests.helpers import perturb_, random_flow


def raw_parameters(n: int, n_bins: int = 6, seed: int = 0, scale: float = 1.5) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        scale * torch.randn(n, k, generator=generator, dtype=torch.float64)
        for k in (n_bins, n_bins, n_bins - 1)
    )


def test_spline_maps_the_box_onto_itself_monotonically_and_is_the_identity_outside():
    x = torch.linspace(-5.0, 5.0, 2001, dtype=torch.float64)
    params = tuple(p[:1].expand(len(x), -1) for p in raw_parameters(1))
    y, log_d = rq_spline(x, *params, bound=3.0)
    assert bool((y[1:] > y[:-1]).all())
    outside = x.abs() >= 3.0
    assert torch.equal(y[outside], x[outside]) and bool((log_d[outside] == 0).all())
    edge = torch.tensor([-3.0, 3.0], dtype=torch.float64)
    edge_params = tuple(p[:1].expand(2, -1) for p in raw_parameters(1))
    torch.testing.assert_close(rq_spline(edge, *edge_params, bound=3.0)[0], edge)


def test_spline_derivative_is_its_log_derivative_and_continuous_across_knots():
    params = raw_parameters(1, seed=3)
    x = torch.linspace(-3.5, 3.5, 4001, dtype=torch.float64).requires_grad_(True)
    y, log_d = rq_spline(x, *(p.expand(len(x), -1) for p in params), bound=3.0)
    (derivative,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(derivative.log(), log_d.detach())
    # C1: value and derivative agree on both sides of every knot, the box's ends included.
    knots = _knots(*params, bound=3.0)[0][0]
    sides = torch.cat([knots - 1e-9, knots + 1e-9])
    values, log_ds = rq_spline(sides, *(p.expand(len(sides), -1) for p in params), bound=3.0)
    below, above = values.chunk(2)
    torch.testing.assert_close(below, above, rtol=0, atol=1e-6)
    log_d_below, log_d_above = log_ds.chunk(2)
    torch.testing.assert_close(log_d_below, log_d_above, rtol=0, atol=1e-6)


def test_spline_inverse_inverts_in_and_outside_the_box():
    x = 3.0 * torch.randn(500, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = raw_parameters(500, seed=2)
    y, _ = rq_spline(x, *params, bound=2.0)
    torch.testing.assert_close(rq_spline_inverse(y, *params, bound=2.0), x)


def test_coupling_starts_at_the_identity():
    layer = RationalQuadraticCoupling(5, generator=torch.Generator().manual_seed(0)).double()
    x = 3.0 * torch.randn(50, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, ladj = layer(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ladj, torch.zeros(50, dtype=torch.float64))


@pytest.mark.parametrize(
    "options", [{"features": 1}, {"features": 3, "n_bins": 1}, {"features": 3, "bound": 0.0}]
)
def test_coupling_rejects_bad_options(options):
    with pytest.raises(ValueError):
        RationalQuadraticCoupling(**options)


def test_sm_on_a_spline_flow_matches_autograd_hessians():
    flow = random_flow("spline", 3, seed=4, scale=0.5, n_blocks=2, hidden_features=8)
    y = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = []
    for row in y:
        grad = torch.func.grad(lambda v: flow.energy(v[None])[0])(row)
        hessian = torch.func.hessian(lambda v: flow.energy(v[None])[0])(row)
        expected.append(0.5 * grad.square().sum() - torch.trace(hessian))
    value = OBJECTIVES["sm"](flow, y)
    torch.testing.assert_close(value, torch.stack(expected).mean() / 3)


def test_ssm_on_a_spline_flow_is_the_hessian_quadratic_form():
    flow = random_flow("spline", 2, seed=6, scale=0.5, n_blocks=2, hidden_features=8)
    y = torch.randn(4, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    # Many Rademacher slices: the mean of vᵀHv over them converges to tr H.
    value = OBJECTIVES["ssm"](flow, y, n_slices=4000, generator=torch.Generator().manual_seed(0))
    exact = OBJECTIVES["sm"](flow, y)
    torch.testing.assert_close(value, exact, rtol=0.05, atol=0.02)


def test_spline_flow_parameters_get_finite_score_matching_gradients():
    flow = build_spline(2, n_blocks=2, hidden_features=8).double()
    perturb_(flow, torch.Generator().manual_seed(0))
    y = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for name in ("ssm", "dsm", "fdssm"):
        loss = OBJECTIVES[name](flow, y, generator=torch.Generator().manual_seed(2))
        grads = torch.autograd.grad(loss, list(flow.parameters()), allow_unused=True)
        assert all(g is None or bool(torch.isfinite(g).all()) for g in grads), name


def test_autoregressive_spline_has_a_lower_triangular_jacobian():
    from skebflow.nn._autoregressive import MaskedAutoregressiveSpline

    layer = MaskedAutoregressiveSpline(4, hidden_features=(16, 16), bound=3.0).double()
    perturb_(layer, torch.Generator().manual_seed(0), scale=0.5)
    x = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x)
    assert torch.count_nonzero(torch.triu(jacobian, diagonal=1)) == 0
    assert torch.count_nonzero(torch.tril(jacobian, diagonal=-1)) > 0  # it is conditioned
    log_diagonal = torch.diagonal(jacobian).log().sum()
    torch.testing.assert_close(layer(x[None])[1][0], log_diagonal)


def test_unconditional_spline_inverts_and_its_log_derivative_is_exact():
    from skebflow.nn import RationalQuadraticSpline

    layer = RationalQuadraticSpline(2, n_bins=6, bound=3.0).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_(generator=generator)
    x = 2.5 * torch.randn(50, 2, generator=generator, dtype=torch.float64)
    y, ladj = layer(x)
    assert torch.allclose(layer.inverse(y), x, atol=1e-10)
    jacobians = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[0])
    assert torch.allclose(ladj[0], torch.logdet(jacobians))
