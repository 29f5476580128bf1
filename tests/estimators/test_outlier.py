"""EBFlowOutlierDetector: scikit-learn compatibility, the offset rule, detection and errors."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal, spearmanr
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity
from sklearn.utils.estimator_checks import parametrize_with_checks

from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow.estimators.outlier import AUTO_CONTAMINATION

pytestmark = pytest.mark.usefixtures("quiet_convergence")

FAST = {"max_iter": 2, "n_blocks": 1, "hidden_features": 8, "device": "cpu", "random_state": 0}


def flow(**overrides: object) -> EBFlowDensity:
    return EBFlowDensity(**{**FAST, **overrides})


def detector(**params: object) -> EBFlowOutlierDetector:
    return EBFlowOutlierDetector(**{"estimator": flow(), **params})


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussian inliers and 5 far-away points (the last 5 rows)."""
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6], [0.6, 1.0]])
    inliers = rng.multivariate_normal([0.0, 0.0], cov, size=195)
    outliers = np.array([[7.0, 7.0], [-7.0, 6.0], [8.0, -8.0], [-6.0, -9.0], [0.0, 10.0]])
    return np.vstack([inliers, outliers]), cov


@pytest.fixture(scope="module")
def fitted(planted) -> EBFlowOutlierDetector:
    X, _ = planted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return detector(contamination=0.1).fit(X)


@parametrize_with_checks(
    [detector(), EBFlowOutlierDetector(estimator=GaussianMixture(random_state=0))]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_decision_function_and_predict_follow_the_offset(fitted, planted):
    X, _ = planted
    scores = fitted.score_samples(X)
    decision = fitted.decision_function(X)
    assert scores.dtype == decision.dtype == np.float64
    assert np.array_equal(decision, scores - fitted.offset_)
    assert np.array_equal(scores, fitted.estimator_.score_samples(X))
    labels = fitted.predict(X)
    assert labels.dtype.kind == "i" and set(np.unique(labels)) <= {-1, 1}
    assert np.array_equal(labels, np.where(decision < 0, -1, 1))
    assert fitted.n_features_in_ == 2 and isinstance(fitted.estimator_, EBFlowDensity)


@pytest.mark.parametrize("contamination", [0.01, 0.05, 0.1, 0.237, 0.5, "auto"])
def test_training_fraction_flagged_follows_the_percentile_rule(planted, contamination):
    X, _ = planted
    det = detector(contamination=contamination).fit(X)
    c = AUTO_CONTAMINATION if contamination == "auto" else contamination
    scores = det.score_samples(X)
    assert det.offset_ == np.percentile(scores, 100 * c)
    assert len(np.unique(scores)) == len(X)  # no ties: the count is exact
    # np.percentile interpolates at rank (n - 1) c, so exactly ceil((n - 1) c) scores lie below.
    assert np.sum(det.predict(X) == -1) == math.ceil((len(X) - 1) * c)


def test_auto_is_contamination_one_percent(planted):
    X, _ = planted
    auto = detector().fit(X)
    explicit = detector(contamination=0.01).fit(X)
    assert auto.contamination == "auto"
    assert auto.offset_ == explicit.offset_
    assert np.array_equal(auto.predict(X), explicit.predict(X))


def test_finds_planted_outliers_like_the_true_gaussian(planted):
    X, cov = planted
    det = EBFlowOutlierDetector(
        estimator=flow(max_iter=20, architecture="fc"), contamination=5 / len(X)
    ).fit(X)
    scores = det.score_samples(X)
    truth = multivariate_normal([0.0, 0.0], cov).logpdf(X)
    assert set(np.argsort(scores)[:5]) == set(np.argsort(truth)[:5]) == set(range(195, 200))
    assert np.array_equal(np.flatnonzero(det.predict(X) == -1), np.arange(195, 200))
    # Clear cases (rays out of the mode along both principal axes) are ordered as the
    # analytic log-density orders them, and the ranks agree overall.
    for direction in ([1.0, 1.0], [1.0, -1.0]):
        ray = np.linspace(0.0, 3.0, 4)[:, None] * np.array(direction) / np.sqrt(2.0)
        assert np.all(np.diff(det.score_samples(ray)) < 0)
    assert spearmanr(scores, truth).statistic > 0.8
    kde = KernelDensity(bandwidth=0.5).fit(X[:195])
    assert set(np.argsort(kde.score_samples(X))[:5]) == set(range(195, 200))


@pytest.mark.parametrize(
    "density", [GaussianMixture(n_components=2, random_state=0), KernelDensity(bandwidth=0.5)]
)
def test_any_density_estimator_with_the_same_offset_rule(planted, density):
    X, _ = planted
    det = EBFlowOutlierDetector(estimator=density, contamination=0.025).fit(X)
    assert det.estimator_ is not density and type(det.estimator_) is type(density)
    assert not hasattr(density, "n_features_in_")  # the given estimator stays unfitted
    scores = density.fit(X).score_samples(X)
    assert np.allclose(det.score_samples(X), scores)
    assert np.isclose(det.offset_, np.percentile(scores, 2.5))
    assert np.array_equal(det.fit_predict(X), np.where(scores < det.offset_, -1, 1))
    assert np.all(det.predict(X)[195:] == -1)


def test_default_estimator_is_ebflow_density():
    det = EBFlowOutlierDetector()
    assert det.estimator is None and det.contamination == "auto"
    assert type(det._estimator()) is EBFlowDensity
    assert det.__sklearn_tags__().input_tags.allow_nan is False


def test_fit_predict_matches_fit_then_predict(planted):
    X, _ = planted
    assert np.array_equal(detector().fit_predict(X), detector().fit(X).predict(X))


def test_not_fitted():
    det = detector()
    for method in (det.score_samples, det.decision_function, det.predict):
        with pytest.raises(NotFittedError):
            method(np.zeros((2, 2)))


def test_wrong_feature_count(fitted):
    message = "X has 3 features, but EBFlowOutlierDetector is expecting 2"
    for method in (fitted.score_samples, fitted.decision_function, fitted.predict):
        with pytest.raises(ValueError, match=message):
            method(np.zeros((4, 3)))


@pytest.mark.parametrize("contamination", [0.7, -0.1, 0.0, "bogus", None])
def test_bad_contamination(planted, contamination):
    X, _ = planted
    with pytest.raises(ValueError, match="contamination"):
        detector(contamination=contamination).fit(X)


class _NoScores:
    def fit(self, X: np.ndarray, y: object = None) -> _NoScores:
        return self

    def get_params(self, deep: bool = True) -> dict:
        return {}


@pytest.mark.parametrize(
    ("estimator", "match"),
    [
        (_NoScores(), "'estimator' parameter.*'fit' and 'score_samples'"),
        ("EBFlowDensity", "'estimator' parameter.*'fit' and 'score_samples'"),
        (EBFlowDensity, "estimator instance.*got estimator class"),
    ],
)
def test_estimator_without_score_samples(planted, estimator, match):
    X, _ = planted
    with pytest.raises(TypeError, match=match):
        EBFlowOutlierDetector(estimator=estimator).fit(X)


def test_nan_training_scores_are_reported(planted):
    class NaNDensity(GaussianMixture):
        def score_samples(self, X: np.ndarray) -> np.ndarray:
            return np.full(len(X), np.nan)

    X, _ = planted
    with pytest.raises(FloatingPointError, match="NaN"):
        EBFlowOutlierDetector(estimator=NaNDensity()).fit(X)


def test_zero_training_density_leaves_no_threshold(planted):
    class ZeroOnHalf(GaussianMixture):
        def score_samples(self, X: np.ndarray) -> np.ndarray:
            scores = super().score_samples(X)
            scores[::2] = -np.inf
            return scores

    X, _ = planted
    with pytest.raises(FloatingPointError, match="not finite"):
        EBFlowOutlierDetector(estimator=ZeroOnHalf(), contamination=0.1).fit(X)


def test_nan_scores_at_prediction_are_reported(planted):
    class NaNLater(GaussianMixture):
        def score_samples(self, X: np.ndarray) -> np.ndarray:
            scores = super().score_samples(X)
            return np.where(np.abs(X[:, 0]) > 100, np.nan, scores)

    X, _ = planted
    detector = EBFlowOutlierDetector(estimator=NaNLater()).fit(X)
    far = np.full((1, X.shape[1]), 1000.0)
    assert np.isnan(detector.decision_function(far)).all()
    with pytest.raises(FloatingPointError, match="NaN"):
        detector.predict(far)


def test_pickle_round_trip(fitted, planted):
    X, _ = planted
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored.offset_ == fitted.offset_
    assert np.array_equal(restored.decision_function(X), fitted.decision_function(X))
    assert np.array_equal(restored.predict(X), fitted.predict(X))
