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


def test_with_fewer_rows_than_features_held_out_rows_keep_a_sensible_density():
    # 60 rows of 100 features: the sample covariance has rank 59, and a whitening fitted
    # to it would put held-out rows 100-fold outside the unseen directions. The
    # Ledoit-Wolf covariance keeps them at the data's scale.
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(100, 100)) / 10
    X, X_test = rng.normal(size=(60, 100)) @ mixing, rng.normal(size=(200, 100)) @ mixing
    whitened = fit_quietly(tiny(objective="dsm", max_iter=1, architecture="fc"), X)
    plain = fit_quietly(tiny(objective="dsm", max_iter=1, architecture="fc", whiten=False), X)
    assert whitened.whiten_ and not plain.whiten_
    # Within a few nats per feature of the unwhitened flow; a whitening of the sample
    # covariance alone scored about 116,000 nats per row worse here (-116,514 against -143).
    assert whitened.score(X_test) > plain.score(X_test) - 3 * X.shape[1]


def test_the_whitening_covariance_is_the_sample_one_for_many_rows():
    from skebflow.estimators import whitening_covariance

    y = torch.as_tensor(correlated(20_000))
    sample = torch.cov(y.T)
    assert torch.allclose(
        whitening_covariance(y), sample, rtol=0.01, atol=0.01 * float(sample.max())
    )
