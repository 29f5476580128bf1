"""Extreme but finite input and points outside the support never give NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skebflow import EBFlowDensity
from tests.helpers import fit_quietly

EXTREME = np.array(
    [[1.7e308, 0.0], [-1.7e308, 1e308], [1e200, 0.0], [1e150, -1e150], [0.0, 1e-300]]
)


def _fit(**params: object) -> EBFlowDensity:
    # Correlated columns: the untrained flow (a standard normal in standardized units)
    # is no fit for them, so training moves away from it and couples the two axes.
    z = np.random.default_rng(0).normal(size=(300, 2))
    X = z @ np.array([[1.0, 0.8], [0.0, 0.6]])
    return fit_quietly(EBFlowDensity(max_iter=3, random_state=0, **params), X)


@pytest.mark.parametrize("architecture", ["spline", "fc", "coupling", "autoregressive"])
def test_extreme_finite_points_score_minus_inf_or_a_number_never_nan(architecture):
    est = _fit(architecture=architecture)
    scores = est.score_samples(EXTREME)
    assert not np.any(np.isnan(scores))
    assert np.all(scores[:3] == -np.inf)  # beyond float64's range: density underflows
    assert np.isfinite(scores[-1])
    # Far points score far below every ordinary one.
    assert np.all(scores[:4] < est.score_samples(np.zeros((1, 2)))[0] - 1e100)


def test_outside_the_logit_bounds_the_density_is_zero():
    X = np.random.default_rng(1).uniform(size=(300, 2))
    est = EBFlowDensity(preprocessing="logit", bounds=(0, 1), max_iter=3, random_state=0)
    fit_quietly(est, X)
    points = np.array([[0.5, 0.5], [1.5, 0.5], [0.2, -1e-9], [0.0, 1.0], [1e308, 0.5]])
    scores = est.score_samples(points)
    np.testing.assert_array_equal(scores[[1, 2, 4]], -np.inf)
    assert np.all(np.isfinite(scores[[0, 3]]))  # the closed box's corners are inside
    # Rows inside are scored exactly as alone.
    assert scores[0] == est.score_samples(points[:1])[0]
    with pytest.raises(ValueError, match="outside"):
        est.score_gradient(points[1:2])  # no gradient where the density is zero


def test_a_nan_from_a_broken_model_is_reported_not_returned():
    est = _fit(architecture="fc")
    with torch.no_grad():
        next(est.flow_.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="broken"):
        est.score_samples(np.zeros((2, 2)))


@pytest.mark.parametrize("architecture", ["spline", "fc", "coupling", "autoregressive"])
def test_the_score_of_extreme_points_is_never_nan_and_grows_linearly_along_rays(architecture):
    est = _fit(architecture=architecture)
    assert est.best_iteration_ > 0  # a trained flow, not the untrained start
    grads = est.score_gradient(EXTREME)
    assert not np.any(np.isnan(grads))
    assert np.all(np.isfinite(grads[2:]))  # within float64's range
    ray = np.array([[1e150, 0.0], [1e200, 0.0], [1.7e308, 0.0]])
    g = est.score_gradient(ray)
    np.testing.assert_allclose(g[1], g[0] * 1e50, rtol=1e-6)
    np.testing.assert_allclose(g[2, 1], g[0, 1] * 1.7e158, rtol=1e-6)
    assert g[2, 0] < 0 and np.sign(g[2, 1]) == np.sign(g[0, 1])  # points back to the data


def test_a_non_finite_score_from_a_broken_model_is_reported():
    est = _fit(architecture="fc")
    with torch.no_grad():
        next(est.flow_.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="broken"):
        est.score_gradient(np.zeros((2, 2)))


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e200, 1e300])
def test_data_of_any_finite_scale_fit_as_the_same_density_in_other_units(scale):
    X = np.random.default_rng(2).normal(size=(200, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]])
    params = {"max_iter": 3, "random_state": 0}
    ref = fit_quietly(EBFlowDensity(**params), X)
    est = fit_quietly(EBFlowDensity(**params), X * scale)
    # p_scaled(s x) = p(x) / s^D: the same model in other units.
    np.testing.assert_allclose(
        est.score_samples(X * scale), ref.score_samples(X) - 2 * np.log(scale), rtol=1e-10
    )
    np.testing.assert_allclose(
        est.sample(50, random_state=0), ref.sample(50, random_state=0) * scale, rtol=1e-9
    )
