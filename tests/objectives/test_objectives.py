"""Objectives against closed forms on analytic energies (float64)."""

import math

import numpy as np
import pytest
import torch

from skebflow.objectives._likelihood import EnergyModel, mean_energy, ml, sml
from skebflow.objectives._registry import OBJECTIVES
from skebflow.objectives._score_matching import SM_MAX_FEATURES, dsm, fdssm, sm, ssm

DTYPE = torch.float64
RANDOM_OBJECTIVES = ["sml", "ssm", "dsm", "fdssm"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def val(t):
    """A loss as a Python float (detached first: float() of a graph tensor warns)."""
    return t.detach().item()


# --------------------------------------------------------------------------- analytic models


class Quadratic:
    """E(y) = ½ yᵀAy, A symmetric positive definite: the Gaussian N(0, A⁻¹)."""

    def __init__(self, a):
        self.a = a
        self.chol = torch.linalg.cholesky(a)

    def energy(self, y):
        return 0.5 * ((y @ self.a) * y).sum(1)

    def log_normalizer(self):
        d = self.a.shape[0]
        return 0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(self.a)

    def sample(self, n, *, generator=None):
        z = torch.randn(n, self.a.shape[0], generator=generator, dtype=self.a.dtype)
        return torch.linalg.solve_triangular(self.chol.T, z.T, upper=True).T  # cov = A⁻¹

    def sm_closed_form(self, y):
        a = self.a.numpy()
        yn = y.numpy()
        per_sample = 0.5 * np.einsum("ni,ij,jk,nk->n", yn, a, a, yn) - np.trace(a)
        return per_sample.mean() / a.shape[0]


class Mixture:
    """E(y) = -log Σ_k π_k N(y; μ_k, Σ_k) with full covariances."""

    def __init__(self, weights, means, covs):
        self.weights, self.means, self.covs = weights, means, covs
        self.prec = torch.linalg.inv(covs)
        self.log_w = torch.log(weights) - 0.5 * torch.logdet(2 * math.pi * covs)

    def energy(self, y):
        diff = y[:, None, :] - self.means
        quad = torch.einsum("nki,kij,nkj->nk", diff, self.prec, diff)
        return -torch.logsumexp(self.log_w - 0.5 * quad, dim=1)

    def log_normalizer(self):
        return torch.zeros((), dtype=DTYPE)

    def sm_closed_form(self, y):
        """Σ_k r_k (‖g_k‖² - tr P_k) - ½‖s‖², g_k = -P_k(y - μ_k), s = Σ_k r_k g_k (numpy)."""
        yn = y.numpy()
        w, mu, cov = self.weights.numpy(), self.means.numpy(), self.covs.numpy()
        prec = np.linalg.inv(cov)
        diff = yn[:, None, :] - mu[None]  # (n, K, D)
        g = -np.einsum("kij,nkj->nki", prec, diff)
        quad = np.einsum("nki,nki->nk", diff, -g)
        log_w = np.log(w) - 0.5 * quad - 0.5 * np.log(np.linalg.det(2 * np.pi * cov))
        r = np.exp(log_w - log_w.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        s = np.einsum("nk,nki->ni", r, g)
        trace_prec = np.trace(prec, axis1=1, axis2=2)
        per_sample = (r * ((g**2).sum(2) - trace_prec)).sum(1) - 0.5 * (s**2).sum(1)
        return per_sample.mean() / yn.shape[1]


class DiagonalGaussian(torch.nn.Module):
    """N(μ, diag σ²) with learnable μ and log σ; exact sampling."""

    def __init__(self, mean, log_scale):
        super().__init__()
        self.mean = torch.nn.Parameter(torch.as_tensor(mean, dtype=DTYPE))
        self.log_scale = torch.nn.Parameter(torch.as_tensor(log_scale, dtype=DTYPE))

    def energy(self, y):
        return 0.5 * (((y - self.mean) / self.log_scale.exp()) ** 2).sum(1)

    def log_normalizer(self):
        return self.log_scale.sum() + 0.5 * self.mean.numel() * math.log(2 * math.pi)

    def sample(self, n, *, generator=None):
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=DTYPE)
        return self.mean + self.log_scale.exp() * z


def random_spd(d, seed):
    m = torch.randn(d, d, generator=gen(seed), dtype=DTYPE)
    return m @ m.T / d + 0.5 * torch.eye(d, dtype=DTYPE)


def make_model(kind):
    if kind == "quadratic":
        return Quadratic(random_spd(3, seed=0))
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=DTYPE)
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.5]], dtype=DTYPE)
    covs = torch.stack([random_spd(2, seed=k) * 0.5 for k in range(3)])
    return Mixture(weights, means, covs)


def make_data(kind, n=50, seed=1):
    d = 3 if kind == "quadratic" else 2
    return torch.randn(n, d, generator=gen(seed), dtype=DTYPE)


def monte_carlo(estimate, n_calls):
    """Mean and standard error of independent calls estimate(seed)."""
    values = torch.tensor([val(estimate(seed)) for seed in range(n_calls)], dtype=DTYPE)
    return float(values.mean()), float(values.std() / math.sqrt(n_calls))


# --------------------------------------------------------------------------- closed forms


def test_objectives_dict_has_exactly_the_six_keys():
    assert set(OBJECTIVES) == {"ml", "sml", "sm", "ssm", "dsm", "fdssm"}
    assert OBJECTIVES["ssm"] is ssm


def test_models_follow_the_protocol():
    assert isinstance(make_model("quadratic"), EnergyModel)
    assert isinstance(DiagonalGaussian([0.0], [0.0]), EnergyModel)


@pytest.mark.parametrize("kind", ["quadratic", "mixture"])
def test_sm_matches_closed_form(kind):
    model, y = make_model(kind), make_data(kind)
    expected = model.sm_closed_form(y)
    assert val(sm(model, y)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("kind", ["quadratic", "mixture"])
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_ssm_converges_to_sm(kind, distribution):
    # ssm is unbiased for sm: the mean of 8 independent calls (200 slices per sample each) must
    # sit within 5 standard errors. The standard error must be below 0.02, while ½‖s‖²/D and
    # tr(∇s)/D are each of order 1.4-4 here, so any factor or sign error would be caught.
    model, y = make_model(kind), make_data(kind)
    exact = val(sm(model, y))
    mean, se = monte_carlo(
        lambda s: ssm(model, y, generator=gen(s), n_slices=200, slice_distribution=distribution),
        n_calls=8,
    )
    assert se < 0.02
    assert abs(mean - exact) < 5 * se


@pytest.mark.parametrize("kind", ["quadratic", "mixture"])
def test_fdssm_converges_to_sm(kind):
    # Unbiased up to O(ξ²) (exactly unbiased for the quadratic); with ξ = 1e-3 in float64 the
    # bias (~1e-6) and rounding (~1e-10) are far below the Monte Carlo standard error.
    model, y = make_model(kind), make_data(kind)
    exact = val(sm(model, y))
    big = y.repeat(400, 1)
    mean, se = monte_carlo(lambda s: fdssm(model, big, generator=gen(s), fd_epsilon=1e-3), 8)
    assert se < 0.02
    assert abs(mean - exact) < 5 * se + 1e-5


def test_ssm_rademacher_is_exact_for_diagonal_hessian():
    # vᵀAv = Σ A_ii v_i² = tr A for every Rademacher v when A is diagonal.
    model = Quadratic(torch.diag(torch.tensor([0.5, 2.0, 3.0], dtype=DTYPE)))
    y = make_data("quadratic")
    assert val(ssm(model, y, generator=gen(3))) == pytest.approx(val(sm(model, y)), rel=1e-12)


def test_fdssm_is_exact_for_one_dimensional_quadratic():
    model = Quadratic(torch.tensor([[2.5]], dtype=DTYPE))
    y = torch.randn(20, 1, generator=gen(0), dtype=DTYPE)
    value = val(fdssm(model, y, generator=gen(1), fd_epsilon=0.3))
    assert value == pytest.approx(model.sm_closed_form(y), rel=1e-10)


def test_ssm_n_slices_equals_tiled_batch():
    model, y = make_model("mixture"), make_data("mixture", n=7)
    tiled = ssm(model, y.repeat(4, 1), generator=gen(5))
    assert val(ssm(model, y, generator=gen(5), n_slices=4)) == pytest.approx(val(tiled))


def test_dsm_minimizer_is_data_variance_plus_noise_variance():
    # Data N(0, s²), model E = y²/(2v) = a y²/2: the loss is a quadratic in a = 1/v, so three
    # evaluations with the same noise determine its minimizer exactly; it must be 1/(s² + σ²)
    # up to the sampling error of 10⁵ draws (relative ≈ 1e-2 at most).
    s, sigma = 1.5, 0.5
    y = s * torch.randn(100_000, 1, generator=gen(0), dtype=DTYPE)

    def loss(a):
        model = Quadratic(torch.tensor([[a]], dtype=DTYPE))
        return val(dsm(model, y, generator=gen(1), noise_scale=sigma))

    a_grid = np.array([0.2, 0.4, 0.6])
    c2, c1, _ = np.polyfit(a_grid, [loss(a) for a in a_grid], 2)
    v_star = 1.0 / (-c1 / (2 * c2))
    assert v_star == pytest.approx(s**2 + sigma**2, rel=0.02)
    # and not the noiseless answer s²
    assert abs(v_star - s**2) > 0.15


def test_ml_is_negative_mean_log_density_per_dimension():
    model, y = make_model("quadratic"), make_data("quadratic")
    reference = torch.distributions.MultivariateNormal(
        torch.zeros(3, dtype=DTYPE), model.a.inverse()
    )
    expected = -reference.log_prob(y).mean() / 3
    assert val(ml(model, y)) == pytest.approx(val(expected), rel=1e-12)


def test_mean_energy():
    model, y = make_model("quadratic"), make_data("quadratic")
    assert val(mean_energy(model, y)) == pytest.approx(float(model.energy(y).mean() / 3))


def test_sml_gradient_matches_ml_in_expectation():
    # E_model[∇E] = -∇log Z, so the sml gradient is an unbiased estimate of the ml gradient.
    # The gradients are of order 0.1-3; the standard error over 8 calls of 10 000 model samples
    # is below 0.01, and the mean must sit within 5 standard errors.
    model = DiagonalGaussian([0.3, -0.5], [0.2, -0.4])
    params = list(model.parameters())
    y = torch.randn(200, 2, generator=gen(0), dtype=DTYPE) * 1.3 + 0.7
    ml_grad = torch.cat(torch.autograd.grad(ml(model, y), params))
    big = y.repeat(50, 1)  # same ml gradient, 10 000 model samples per sml call
    draws = torch.stack(
        [
            torch.cat(torch.autograd.grad(sml(model, big, generator=gen(s)), params))
            for s in range(8)
        ]
    )
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert torch.all(se < 0.01)
    assert torch.all((mean - ml_grad).abs() < 5 * se)


@pytest.mark.parametrize("name", ["sm", "ssm"])
def test_score_matching_parameter_gradient_is_exact(name):
    # For N(μ, diag σ²): ∇E = (y-μ)/σ², ∇²E = diag(1/σ²), so
    # SM/D = mean(½Σ(y-μ)²/σ⁴ - Σ 1/σ²)/D; Rademacher ssm is exact here (diagonal Hessian).
    model = DiagonalGaussian([0.3, -0.5], [0.2, -0.4])
    y = make_data("mixture")
    params = list(model.parameters())
    got = torch.autograd.grad(OBJECTIVES[name](model, y, generator=gen(0)), params)
    inv_var = torch.exp(-2 * model.log_scale)
    closed = (0.5 * ((y - model.mean) ** 2 * inv_var**2).sum(1) - inv_var.sum()).mean() / 2
    expected = torch.autograd.grad(closed, params)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", RANDOM_OBJECTIVES)
def test_same_seed_same_value_different_seed_differs(name):
    # Non-diagonal Hessian: Rademacher ssm would be deterministic on a diagonal one.
    model, y = make_model("quadratic"), make_data("quadratic")
    a = OBJECTIVES[name](model, y, generator=gen(7))
    b = OBJECTIVES[name](model, y, generator=gen(7))
    c = OBJECTIVES[name](model, y, generator=gen(8))
    assert val(a) == val(b)
    assert val(a) != val(c)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_input_untouched_and_loss_differentiable(name):
    model = DiagonalGaussian([0.3, -0.5], [0.2, -0.4])
    y = make_data("mixture")
    y_before = y.clone()
    loss = OBJECTIVES[name](model, y, generator=gen(0))
    assert loss.shape == ()
    loss.backward()
    assert torch.equal(y, y_before)
    assert not y.requires_grad and y.grad is None
    for p in model.parameters():
        assert p.grad is not None and torch.all(torch.isfinite(p.grad))
        assert torch.any(p.grad != 0)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_works_under_no_grad_and_gives_same_value(name):
    model = DiagonalGaussian([0.3, -0.5], [0.2, -0.4])
    y = make_data("mixture")
    with torch.no_grad():
        value = OBJECTIVES[name](model, y, generator=gen(0))
    assert not value.requires_grad
    assert val(value) == pytest.approx(val(OBJECTIVES[name](model, y, generator=gen(0))))


def test_default_generator_leaves_global_rng_alone():
    model, y = make_model("quadratic"), make_data("quadratic")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    for name in RANDOM_OBJECTIVES:
        assert torch.isfinite(OBJECTIVES[name](model, y))
    assert torch.equal(torch.get_rng_state(), state)


def test_nan_is_not_masked():
    model, y = make_model("quadratic"), make_data("quadratic")
    y[0, 0] = float("nan")
    for name in sorted(OBJECTIVES):
        assert torch.isnan(OBJECTIVES[name](model, y, generator=gen(0)))


def test_sm_refuses_too_many_features():
    d = SM_MAX_FEATURES + 1
    model = Quadratic(torch.eye(d, dtype=DTYPE))
    with pytest.raises(ValueError, match="ssm"):
        sm(model, torch.zeros(2, d, dtype=DTYPE))


@pytest.mark.parametrize(
    ("objective", "options"),
    [
        (ssm, {"n_slices": 0}),
        (ssm, {"n_slices": -2}),
        (ssm, {"n_slices": 1.5}),
        (ssm, {"n_slices": True}),
        (ssm, {"slice_distribution": "uniform"}),
        (dsm, {"noise_scale": 0.0}),
        (dsm, {"noise_scale": -0.1}),
        (dsm, {"noise_scale": float("nan")}),
        (fdssm, {"fd_epsilon": 0.0}),
        (fdssm, {"fd_epsilon": -1.0}),
        (fdssm, {"fd_epsilon": float("inf")}),
    ],
)
def test_bad_options_raise(objective, options):
    model, y = make_model("quadratic"), make_data("quadratic")
    with pytest.raises(ValueError, match=next(iter(options))):
        objective(model, y, generator=gen(0), **options)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize(
    "y",
    [
        torch.zeros(3, dtype=DTYPE),
        torch.zeros(2, 0, 4, dtype=DTYPE),
        torch.zeros(0, 3, dtype=DTYPE),
        torch.zeros(2, 3, dtype=torch.int64),
    ],
    ids=["1d", "empty-event", "empty", "integer"],
)
def test_bad_y_raises(name, y):
    # (n, *event_shape) is valid for any event shape (tests/nn/test_event_shapes.py).
    with pytest.raises(ValueError, match="y must"):
        OBJECTIVES[name](make_model("quadratic"), y, generator=gen(0))


def test_wrong_energy_shape_raises():
    class Bad(Quadratic):
        def energy(self, y):
            return super().energy(y)[:, None]

    model, y = Bad(random_spd(3, seed=0)), make_data("quadratic")
    for name in sorted(OBJECTIVES):
        with pytest.raises(ValueError, match="energy must return shape"):
            OBJECTIVES[name](model, y, generator=gen(0))
