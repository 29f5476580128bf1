"""Which flows have the twice-differentiable energy that sliced score matching assumes.

Score matching's loss ``E_p[½‖s‖² + tr ∇s]`` equals the Fisher divergence up to a constant
only because ``E_p[tr ∇s] = -E_p[‖s‖²]`` (integration by parts), which needs a score
without jumps. A rational-quadratic spline's log-derivative has a derivative that jumps at
every knot, so the trace that autograd computes misses those jumps: on a spline flow the
identity fails by about half the score's scale, while on the smooth flows (affine
couplings with smooth conditioners, the FC flow) it holds to quadrature error. This is
why sliced score matching needs a smooth architecture (docs/defaults.md).
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_flow


def _stein_residual(flow: torch.nn.Module, limit: float = 8.0, n: int = 401) -> tuple:
    """Return (mass, E_p[tr ∇s + ‖s‖²], E_p[‖s‖²]) by quadrature on a 2-D grid."""
    xs = torch.linspace(-limit, limit, n, dtype=torch.float64)
    y = torch.cartesian_prod(xs, xs).requires_grad_(True)
    cell = float((xs[1] - xs[0]) ** 2)
    energy = flow.energy(y)
    (grad,) = torch.autograd.grad(energy.sum(), y, create_graph=True)
    score = -grad
    trace = sum(
        torch.autograd.grad(score[:, i].sum(), y, retain_graph=True)[0][:, i] for i in range(2)
    )
    with torch.no_grad():
        density = torch.exp(-energy - flow.log_normalizer())
        squared = (score**2).sum(1)
        mass = float(density.sum() * cell)
        residual = float((density * (trace + squared)).sum() * cell)
        scale = float((density * squared).sum() * cell)
    return mass, residual, scale


@pytest.mark.parametrize(
    ("architecture", "options"),
    [("coupling", {"hidden_features": 16}), ("fc", {})],
)
def test_smooth_flows_satisfy_integration_by_parts(architecture, options):
    flow = random_flow(architecture, 2, seed=1, scale=0.15, n_blocks=2, **options).eval()
    mass, residual, scale = _stein_residual(flow)
    assert mass > 0.97
    assert abs(residual) < 0.02 * scale


def test_the_spline_flows_autograd_trace_misses_the_jumps_at_its_knots():
    flow = random_flow("spline", 2, seed=1, scale=0.15, n_blocks=2, hidden_features=16).eval()
    mass, residual, scale = _stein_residual(flow)
    assert mass > 0.99
    assert abs(residual) > 0.2 * scale
