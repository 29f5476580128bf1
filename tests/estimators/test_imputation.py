"""EBFlowDensity.impute, sample_conditional and the Langevin refinement of samples.

The sampler is checked twice: against the fitted model's own conditional, computed by
quadrature of ``score_samples`` on a fine grid (no fitting error, Monte-Carlo tolerance
only), and against the analytic conditional of the Gaussian or mixture the model was
fitted to (a tolerance that includes the fit's error).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.sampling import refine
from tests.helpers import fit_quietly, ignore_short_fit, tiny

pytestmark = ignore_short_fit

RHO = 0.8
X1 = np.array([-1.5, 0.0, 0.7, 2.0])
#: A larger flow than tiny's, trained longer: the conditionals are checked closely.
model = functools.partial(tiny, max_iter=30, n_blocks=2, hidden_features=32)


@pytest.fixture(scope="module")
def gauss2() -> EBFlowDensity:
    rng = np.random.default_rng(0)
    X = rng.multivariate_normal([0, 0], [[1, RHO], [RHO, 1]], size=3000)
    return fit_quietly(model(), X)


def _quadrature(est: EBFlowDensity, x1: float) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Mean and variance of the model's own p(x2 | x1), and the grid's weights."""
    grid = np.linspace(-8.0, 8.0, 4001)
    log_p = est.score_samples(np.c_[np.full_like(grid, x1), grid])
    w = np.exp(log_p - log_p.max())
    w /= w.sum()
    mean = float(w @ grid)
    return mean, float(w @ (grid - mean) ** 2), grid, w


def test_conditional_mean_matches_quadrature_and_the_analytic_gaussian(gauss2):
    X = np.c_[np.repeat(X1, 25), np.full(100, np.nan)]
    filled, report = gauss2.impute(X, return_report=True, random_state=0)
    means = filled[:, 1].reshape(len(X1), 25).mean(axis=1)
    for x1, mean in zip(X1, means, strict=True):
        exact, _, _, _ = _quadrature(gauss2, x1)
        # 25 rows x 4 chains x 150 kept steps: Monte-Carlo error about 0.005
        assert abs(mean - exact) < 0.03, (x1, mean, exact)
        assert abs(mean - RHO * x1) < 0.15, (x1, mean, RHO * x1)  # the fit's error too
    assert 0.45 < np.median(report.acceptance) < 0.7
    assert np.nanmax(report.rhat) < 1.1
    assert not report.not_mixed.any()


def test_posterior_draws_match_the_conditional_variance(gauss2):
    X = np.c_[X1, np.full(len(X1), np.nan)]
    draws = gauss2.sample_conditional(X, 1000, n_steps=100, random_state=1)
    assert draws.shape == (len(X1), 1000, 2)
    assert np.all(draws[:, :, 0] == X1[:, None])
    for x1, row in zip(X1, draws[:, :, 1], strict=True):
        exact_mean, exact_var, _, _ = _quadrature(gauss2, x1)
        assert abs(row.mean() - exact_mean) < 0.06
        assert abs(row.var() / exact_var - 1) < 0.15, (x1, row.var(), exact_var)
        assert abs(row.var() / (1 - RHO**2) - 1) < 0.25
    # impute(sample_posterior=True): one draw per row, with the conditional's spread
    X = np.c_[np.zeros(800), np.full(800, np.nan)]
    one = gauss2.impute(X, sample_posterior=True, n_chains=1, n_steps=100, random_state=2)[:, 1]
    assert abs(one.var() / _quadrature(gauss2, 0.0)[1] - 1) < 0.15


def test_observed_entries_and_complete_rows_are_bit_identical(gauss2):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2)) * np.pi
    X[::3, 1] = np.nan
    X[1::5, 0] = np.nan
    filled = gauss2.impute(X, n_steps=40, random_state=0)
    observed = ~np.isnan(X)
    assert np.array_equal(filled[observed], X[observed])
    complete = observed.all(axis=1)
    assert filled[complete].tobytes() == X[complete].tobytes()
    assert not np.isnan(filled).any()
    np.testing.assert_array_equal(filled, gauss2.impute(X, n_steps=40, random_state=0))
    assert not np.array_equal(filled, gauss2.impute(X, n_steps=40, random_state=1))
    np.testing.assert_array_equal(
        gauss2.sample_conditional(X, 3, n_steps=40, random_state=5),
        gauss2.sample_conditional(X, 3, n_steps=40, random_state=5),
    )


def test_rows_without_missing_entries_run_no_chain(gauss2):
    X = np.random.default_rng(0).normal(size=(5, 2))
    filled, report = gauss2.impute(X, return_report=True, random_state=0)
    assert filled.tobytes() == X.tobytes()
    assert np.isnan(report.rhat).all() and report.summary() == "no missing entries"


def test_a_row_with_every_entry_missing_gets_the_model_mean(gauss2):
    filled = gauss2.impute([[np.nan, np.nan], [1.0, np.nan]], random_state=0)
    assert np.all(np.abs(filled[0]) < 0.1)
    draws = gauss2.sample_conditional([[np.nan, np.nan]], 500, random_state=0)[0]
    assert np.all(np.abs(draws.mean(axis=0)) < 0.15)
    assert abs(np.corrcoef(draws.T)[0, 1] - RHO) < 0.1


def test_input_validation(gauss2):
    with pytest.raises(ValueError, match="inf"):
        gauss2.impute([[np.inf, np.nan]])
    with pytest.raises(ValueError, match="features"):
        gauss2.impute([[1.0, np.nan, 2.0]])
    with pytest.raises(ValueError, match="n_steps"):
        gauss2.impute([[1.0, np.nan]], n_steps=0)
    with pytest.raises(ValueError, match="step_size"):
        gauss2.impute([[1.0, np.nan]], step_size=-1.0)
    with pytest.raises(ValueError, match="n_samples"):
        gauss2.sample_conditional([[1.0, np.nan]], n_samples=0)


def test_a_chain_that_cannot_move_is_reported(monkeypatch):
    import skebflow.sampling._conditional as conditional

    run_chains = conditional.run_chains

    def langevin_only(*args: object, **kwargs: object) -> object:
        options = dataclasses.replace(kwargs["options"], independence=False)
        return run_chains(*args, **{**kwargs, "options": options})

    # Without the independence moves, chains with a tiny fixed step stay where the
    # importance resampling put them, and R-hat sees it.
    monkeypatch.setattr(conditional, "run_chains", langevin_only)
    rng = np.random.default_rng(0)
    est = fit_quietly(tiny(max_iter=3), rng.normal(size=(300, 2)))
    X = np.c_[np.zeros(40), np.full(40, np.nan)]
    with pytest.warns(ConvergenceWarning, match="did not mix"):
        _, report = est.impute(X, step_size=1e-8, n_steps=40, return_report=True, random_state=0)
    assert report.not_mixed.mean() > 0.5


def test_logit_support_is_respected():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 1.0, size=(500, 2))
    est = fit_quietly(model(preprocessing="logit", bounds=(0.0, 1.0), max_iter=3, n_blocks=1), X)
    draws = est.sample_conditional([[0.5, np.nan]], 200, random_state=0)[0, :, 1]
    assert np.all((draws >= 0.0) & (draws < 1.0))
    with pytest.raises(ValueError, match="outside"):
        est.impute([[1.5, np.nan]])


def test_dequantized_draws_are_integers():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 8, size=(400, 2)).astype(float)
    est = fit_quietly(model(dequantize=True, max_iter=3, n_blocks=1), X)
    draws = est.impute([[3.0, np.nan]] * 20, sample_posterior=True, random_state=0)[:, 1]
    assert np.array_equal(draws, np.floor(draws))


def test_refined_samples_keep_the_model_distribution(gauss2):
    generator = torch.Generator().manual_seed(0)
    exact = torch.as_tensor(gauss2.sample(2000, random_state=0))
    refined = refine(gauss2.flow_, gauss2.preprocessing_, exact, n_steps=20, generator=generator)
    assert refined.shape == exact.shape and refined.dtype == torch.float64
    assert not torch.equal(refined, exact)
    r = refined.numpy()
    assert np.all(np.abs(r.mean(axis=0)) < 0.1)
    assert abs(np.corrcoef(r.T)[0, 1] - RHO) < 0.05
    again = refine(
        gauss2.flow_,
        gauss2.preprocessing_,
        exact,
        n_steps=20,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(refined, again)


@pytest.mark.slow
def test_five_dimensional_gaussian_conditional():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T / 5 + 0.2 * np.eye(5)
    X = rng.multivariate_normal(np.zeros(5), cov, size=4000)
    est = fit_quietly(model(max_iter=25, n_blocks=2), X)
    test = rng.multivariate_normal(np.zeros(5), cov, size=60)
    m, o = [1, 3], [0, 2, 4]
    gain = cov[np.ix_(m, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
    cond_cov = cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)]
    X_missing = test.copy()
    X_missing[:, m] = np.nan
    filled = est.impute(X_missing, random_state=0)
    analytic = test[:, o] @ gain.T
    err = (filled[:, m] - analytic) / np.sqrt(np.diag(cond_cov))
    assert np.sqrt(np.mean(err**2)) < 0.2, np.sqrt(np.mean(err**2))  # in conditional sds
    draws = est.sample_conditional(X_missing[:4], 500, random_state=0)[:, :, m]
    for row, mean in zip(draws, analytic[:4], strict=True):
        centred = row - row.mean(axis=0)
        emp = centred.T @ centred / len(row)
        np.testing.assert_allclose(np.diag(emp), np.diag(cond_cov), rtol=0.25)
        assert np.all(np.abs(row.mean(axis=0) - mean) < 0.25 * np.sqrt(np.diag(cond_cov)) + 0.05)


@pytest.mark.slow
def test_bimodal_conditional_keeps_both_modes_in_proportion():
    rng = np.random.default_rng(0)
    n = 4000
    low = rng.random(n) < 0.3
    X = np.c_[rng.normal(size=n), np.where(low, -2.0, 2.0) + 0.4 * rng.normal(size=n)]
    est = fit_quietly(model(max_iter=40), X)
    _, _, grid, w = _quadrature(est, 0.0)
    model_low = float(w[grid < 0].sum())
    assert abs(model_low - 0.3) < 0.05
    draws = est.sample_conditional([[0.0, np.nan]], 2000, random_state=0)[0, :, 1]
    frac = float(np.mean(draws < 0))
    assert abs(frac - model_low) < 0.04, (frac, model_low)  # 3 sd of 2000 draws
    assert abs(np.mean(draws[draws < 0]) + 2.0) < 0.15
    assert abs(np.mean(draws[draws > 0]) - 2.0) < 0.15
    # the chains cross between the modes (independence moves), so they agree
    filled, report = est.impute(
        np.c_[np.zeros(50), np.full(50, np.nan)], return_report=True, random_state=0
    )
    assert np.median(report.rhat) < 1.1
    exact = float(w @ grid)
    assert abs(filled[:, 1].mean() - exact) < 0.1 and filled[:, 1].std() < 0.35


def test_verbose_one_shows_the_chains_progress(gauss2, capsys):
    """``verbose=1``: a bar of the MCMC steps (all batches, a time estimate) on stderr for
    ``impute`` and ``sample_conditional``; ``verbose=0`` prints nothing."""
    X = np.array([[0.3, np.nan], [np.nan, -0.2], [0.1, 0.4]])
    gauss2.impute(X, n_steps=7, random_state=0)
    assert capsys.readouterr().err == ""
    gauss2.set_params(verbose=1)
    try:
        gauss2.impute(X, n_steps=7, random_state=0)
        err = capsys.readouterr().err
        assert "MCMC steps" in err and "/7 " in err  # 7 steps: the two partial rows, 1 batch
        gauss2.sample_conditional(X, n_samples=2, n_steps=5, random_state=0)
        assert "/5 " in capsys.readouterr().err
    finally:
        gauss2.set_params(verbose=0)
