"""EBFlowImputer: scikit-learn's checks, a pipeline, and the fill on correlated data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from skebflow import EBFlowDensity, EBFlowImputer
from tests.helpers import ignore_short_fit, tiny

pytestmark = [
    ignore_short_fit,
    pytest.mark.filterwarnings("ignore:.*too few for a validation split:UserWarning"),
]


def tiny_imputer(**overrides: object) -> EBFlowImputer:
    """A tiny imputer; its flow is unseeded (the imputer's random_state seeds its clone)."""
    options = {"n_rounds": 1, "n_steps": 10, "random_state": 0, **overrides}
    return EBFlowImputer(tiny(random_state=None), **options)


@parametrize_with_checks([tiny_imputer()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _correlated(n: int, seed: int = 0, fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal([0, 0, 0], [[1, 0.9, 0.8], [0.9, 1, 0.9], [0.8, 0.9, 1]], n)
    X_missing = X.copy()
    X_missing[rng.random(X.shape) < fraction] = np.nan
    return X, X_missing


def test_fill_beats_the_mean_and_keeps_observed_entries():
    X, X_missing = _correlated(1500)
    imputer = EBFlowImputer(
        EBFlowDensity(max_iter=20, n_blocks=1, hidden_features=16), n_rounds=2, random_state=0
    )
    filled = imputer.fit_transform(X_missing)
    missing = np.isnan(X_missing)
    assert np.array_equal(filled[~missing], X_missing[~missing])
    rmse = np.sqrt(np.mean((filled - X)[missing] ** 2))
    mean_rmse = np.sqrt(np.mean((SimpleImputer().fit_transform(X_missing) - X)[missing] ** 2))
    assert rmse < 0.6 * mean_rmse, (rmse, mean_rmse)
    # fit_transform is fit(X).transform(X); a fitted imputer is deterministic
    np.testing.assert_array_equal(imputer.transform(X_missing), filled)
    assert imputer.report_ is not None and np.nanmedian(imputer.report_.acceptance) > 0.3


def test_same_random_state_same_fill():
    _, X_missing = _correlated(200)
    a = tiny_imputer(random_state=3).fit_transform(X_missing)
    b = tiny_imputer(random_state=3).fit_transform(X_missing)
    np.testing.assert_array_equal(a, b)


def test_pipeline_in_front_of_a_classifier():
    X, X_missing = _correlated(300, seed=1)
    y = (X[:, 0] > 0).astype(int)
    pipe = make_pipeline(tiny_imputer(), LogisticRegression()).fit(X_missing, y)
    assert pipe.score(X_missing, y) > 0.7


def test_complete_training_data_fit_once_and_transform_unchanged():
    X, X_missing = _correlated(200, seed=2)
    imputer = tiny_imputer(n_rounds=3).fit(X)
    assert imputer.report_ is None
    assert imputer.estimator_.n_iter_ <= 2
    filled = imputer.transform(X_missing)
    assert not np.isnan(filled).any()
    assert np.array_equal(imputer.transform(X), X)


def test_an_empty_column_is_an_error():
    _, X_missing = _correlated(50)
    X_missing[:, 1] = np.nan
    with pytest.raises(ValueError, match="no observed value"):
        tiny_imputer().fit(X_missing)


def test_inf_is_an_error():
    X, _ = _correlated(50)
    imputer = tiny_imputer().fit(X)
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        imputer.transform(X)


def test_pixel_data_with_a_dequantized_bounded_flow():
    # IterativeImputer's draws are neither integers nor inside the bounds; the initial
    # fill must respect the flow's support or the first fit raises.
    rng = np.random.default_rng(0)
    X = np.clip(np.round(rng.multivariate_normal([8, 8], [[9, 8], [8, 9]], 300)), 0, 16)
    X = np.column_stack([X, np.zeros(len(X))])  # a constant column, as digits' pixel 0
    X_missing = np.where(rng.random(X.shape) < 0.2, np.nan, X)
    X_missing[np.isnan(X_missing).all(axis=1), 0] = X[np.isnan(X_missing).all(axis=1), 0]
    flow = tiny(preprocessing="logit", bounds=(0, 16), dequantize=True, random_state=None)
    imputer = EBFlowImputer(flow, n_rounds=2, n_steps=10, random_state=0)
    filled = imputer.fit_transform(X_missing)
    missing = np.isnan(X_missing)
    assert np.array_equal(filled[~missing], X[~missing])
    assert filled.min() >= 0 and filled.max() <= 16
    with pytest.raises(ValueError, match="integer"):  # what the unclipped draws would hit
        tiny(preprocessing="logit", bounds=(0, 16), dequantize=True, random_state=None).fit(X + 0.3)
