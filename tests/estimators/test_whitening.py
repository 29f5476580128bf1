"""``whiten``: score matching trained in whitened coordinates, folded into the flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import DataDimensionalityWarning

from skebflow import EBFlowDensity
from skebflow.nn import Whitening
from tests.helpers import fit_quietly, ignore_short_fit, quietly, tiny

pytestmark = ignore_short_fit


def correlated(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    return z @ np.array([[1.0, 0.9, 0.0], [0.0, 0.3, 0.5], [0.0, 0.0, 0.2]]) * [2.0, 1.0, 5.0]


def test_a_score_matching_fit_starts_its_flow_with_the_fitted_whitening():
    X = correlated()
    est = fit_quietly(tiny(objective="dsm", validation_fraction=0.25), X)
    assert est.whiten_ is True
    whitening = est.flow_.layers[0]
    assert isinstance(whitening, Whitening)
    # Fitted to the preprocessed training rows (the validation rows held out): close to
    # white on all rows, exactly white on none of them.
    with torch.no_grad():
        y = est.preprocessing_.forward(torch.as_tensor(X))[0]
        u = whitening.map(y)
    covariance = torch.cov(u.T)
    assert torch.allclose(covariance, torch.eye(3, dtype=torch.float64), atol=0.2)
    assert not torch.allclose(covariance, torch.eye(3, dtype=torch.float64), atol=1e-6)
    # The density is still a density of X: log Z holds log|det W|.
    assert est.log_normalizer_ == pytest.approx(float(est.flow_.log_normalizer()))
    assert np.isfinite(est.score(X))


def test_maximum_likelihood_is_not_whitened_by_default():
    est = fit_quietly(tiny(), correlated())
    assert est.whiten_ is False
    assert not isinstance(est.flow_.layers[0], Whitening)


def test_a_warm_start_keeps_the_whitening_it_was_fitted_with():
    X = correlated()
    est = fit_quietly(tiny(objective="dsm", warm_start=True), X)
    first = est.flow_.layers[0].weight.clone()
    # A second fit on other data continues the same model: the map is not refitted...
    fit_quietly(est, correlated(seed=1) * 3.0)
    assert torch.equal(est.flow_.layers[0].weight, first)
    # ... and a warm start of a whitened model keeps the whitening even under ML.
    est.set_params(objective="ml")
    fit_quietly(est, X)
    assert est.whiten_ is True and isinstance(est.flow_.layers[0], Whitening)


def test_partial_fit_whitens_with_the_first_chunk():
    X = correlated(600)
    est = tiny(objective="ssm")
    with quietly():
        est.partial_fit(X[:300])
        first = est.flow_.layers[0].weight.clone()
        est.partial_fit(X[300:])
    assert torch.equal(est.flow_.layers[0].weight, first)
    assert est.whiten_ is True


def test_whiten_on_an_image_flow_is_a_clear_error_from_fit():
    X = np.random.default_rng(0).random((20, 16))
    with pytest.raises(ValueError, match="whiten=True applies to tabular flows"):
        tiny(whiten=True, image_shape=(1, 4, 4)).fit(X)


def test_whitening_degenerate_data_stays_finite():
    X = correlated()
    X = np.column_stack([X, X[:, 0] - 2 * X[:, 1]])  # an exactly collinear column
    with pytest.warns(DataDimensionalityWarning, match="collinear"):
        est = fit_quietly(tiny(objective="dsm"), X)
    assert np.isfinite(est.score_samples(X)).all()
    assert np.isfinite(est.sample(20, random_state=0)).all()


def test_sklearn_clone_and_params_know_whiten():
    est = EBFlowDensity(whiten=False)
    assert est.get_params()["whiten"] is False
    with pytest.raises(ValueError, match="whiten"):
        EBFlowDensity(whiten="yes").fit(correlated())
