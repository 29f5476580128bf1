"""EBFlowOutlierDetector: scikit-learn compatibility, the offset rule, detection and errors."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy.stats import multivariate_normal, spearmanr
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow.estimators import AUTO_CONTAMINATION
from tests.helpers import failing_on, fit_quietly, ignore_convergence, tiny

pytestmark = ignore_convergence


def detector(**params: object) -> EBFlowOutlierDetector:
    return EBFlowOutlierDetector(**{"estimator": tiny(), **params})


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
    return fit_quietly(detector(contamination=0.1), X, ConvergenceWarning)


@parametrize_with_checks(
    [
        detector(),
        EBFlowOutlierDetector(estimator=GaussianMixture(random_state=0)),
        detector(novelty=False),
        EBFlowOutlierDetector(estimator=GaussianMixture(random_state=0), novelty=False),
    ]
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
    det = detector(contamination=contamination, novelty=False).fit(X)
    assert det.calibration_ == "training"
    c = AUTO_CONTAMINATION if contamination == "auto" else contamination
    scores = det.score_samples(X)
    assert det.offset_ == np.percentile(scores, 100 * c)
    assert len(np.unique(scores)) == len(X)  # no ties: the count is exact
    # np.percentile interpolates at rank (n - 1) c, so exactly ceil((n - 1) c) scores lie below.
    assert np.sum(det.predict(X) == -1) == math.ceil((len(X) - 1) * c)


@pytest.mark.parametrize("contamination", [0.01, 0.1])
def test_the_threshold_is_a_quantile_of_scores_the_model_did_not_train_on(planted, contamination):
    """With 4,000 rows, 0.1 of the 400 validation rows is 40 expected flags: the flow's
    validation rows set the threshold; 0.01 of the 20 validation rows of the 200 planted
    rows is 0.2, too few: out-of-fold scores of 5 clones do."""
    X, _ = planted
    if contamination == 0.1:
        X = np.random.default_rng(1).normal(size=(4000, 2))
    det = detector(contamination=contamination).fit(X)
    if contamination == 0.1:
        index = det.estimator_._validation_index
        assert det.calibration_ == "validation" and len(index) == 400
        expected = np.percentile(det.score_samples(X[index]), 10)
    else:
        assert det.calibration_ == "cross-fitted"
        scores = np.empty(len(X))
        for train, test in KFold(5, shuffle=True, random_state=0).split(X):
            scores[test] = clone(det.estimator_).fit(X[train]).score_samples(X[test])
        expected = np.percentile(scores, 1)
    assert det.offset_ == expected


def test_held_out_threshold_flags_about_contamination_of_fresh_inliers():
    """A flexible density scores its own training rows too high (here -1.4 nats on them,
    -32 on fresh rows): the training rule flags nearly every fresh inlier, the held-out
    (cross-fitted) rule about the contamination."""
    rng = np.random.default_rng(0)
    train, fresh = rng.normal(size=(150, 8)), rng.normal(size=(5000, 8))
    flow = EBFlowDensity(
        max_iter=80, early_stopping=False, n_blocks=2, hidden_features=32,
        learning_rate=1e-2, random_state=0,
    )  # fmt: skip
    rates = {}
    for novelty in (True, False):
        det = EBFlowOutlierDetector(estimator=flow, contamination=0.1, novelty=novelty)
        rates[novelty] = np.mean(fit_quietly(det, train).predict(fresh) == -1)
    assert 0.05 < rates[True] < 0.2 and rates[False] > 0.5


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
        estimator=tiny(max_iter=20, architecture="fc"), contamination=5 / len(X)
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
    det = EBFlowOutlierDetector(estimator=density, contamination=0.025, novelty=False)
    det.fit(X)
    assert det.estimator_ is not density and type(det.estimator_) is type(density)
    assert not hasattr(density, "n_features_in_")  # the given estimator stays unfitted
    scores = density.fit(X).score_samples(X)
    assert np.allclose(det.score_samples(X), scores)
    assert np.isclose(det.offset_, np.percentile(scores, 2.5))
    assert np.array_equal(det.fit_predict(X), np.where(scores < det.offset_, -1, 1))
    assert np.all(det.predict(X)[195:] == -1)


def test_default_estimator_is_ebflow_density():
    det = EBFlowOutlierDetector()
    assert det.estimator is None and det.contamination == "auto" and det.random_state is None
    assert type(det._estimator()) is EBFlowDensity
    assert det._estimator().get_params() == EBFlowDensity().get_params()
    assert det.__sklearn_tags__().input_tags.allow_nan is False


def test_fit_predict_only_for_outlier_detection(planted):
    """``novelty=False``: ``fit_predict`` is ``fit(X).predict(X)``; the default novelty
    detector has none (``LocalOutlierFactor``'s rule), with a message saying why."""
    X, _ = planted
    det = detector(novelty=False)
    assert np.array_equal(det.fit_predict(X), detector(novelty=False).fit(X).predict(X))
    assert not hasattr(detector(), "fit_predict")
    with pytest.raises(AttributeError, match="has no attribute 'fit_predict'") as error:
        detector().fit_predict(X)
    # scikit-learn's available_if chains the reason, shown in the traceback
    assert "novelty=True" in str(error.value.__cause__)
    assert "novelty=False" in str(error.value.__cause__)


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


class _ZeroOnFirst(GaussianMixture):
    """A Gaussian mixture whose log-density is -inf on the first ``n_zero`` rows."""

    def __init__(self, n_zero: int = 0, *, sign: float = -1.0) -> None:
        super().__init__()
        self.n_zero = n_zero
        self.sign = sign

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        scores = super().score_samples(X)
        scores[: self.n_zero] = self.sign * np.inf
        return scores


@pytest.mark.parametrize("n_zero", [0, 1, 19])
def test_zero_training_density_below_the_contamination_keeps_a_finite_offset(planted, n_zero):
    X, _ = planted
    with failing_on(RuntimeWarning):  # no inf - inf on the way
        det = EBFlowOutlierDetector(
            estimator=_ZeroOnFirst(n_zero), contamination=0.1, novelty=False
        ).fit(X)
    scores = det.score_samples(X)
    assert np.isneginf(scores).sum() == n_zero
    assert np.isfinite(det.offset_) and det.offset_ == np.percentile(scores, 10)
    labels = det.predict(X)
    assert np.all(labels[:n_zero] == -1) and np.all(np.isneginf(det.decision_function(X)[:n_zero]))
    # np.percentile interpolates at rank (n - 1) c = 19.9: rows 0-19 of the order fall below.
    assert np.sum(labels == -1) == 20


@pytest.mark.parametrize(("n_zero", "contamination"), [(20, 0.1), (100, 0.1), (5, "auto")])
def test_zero_training_density_at_the_quantile_leaves_no_threshold(planted, n_zero, contamination):
    X, _ = planted
    det = EBFlowOutlierDetector(
        estimator=_ZeroOnFirst(n_zero), contamination=contamination, novelty=False
    )
    match = f"-inf \\(zero density\\) at {n_zero} of the 200 training points.*no finite threshold"
    with failing_on(RuntimeWarning), pytest.raises(ValueError, match=match):
        det.fit(X)


def test_infinite_training_density_at_the_quantile_leaves_no_threshold(planted):
    X, _ = planted
    det = EBFlowOutlierDetector(
        estimator=_ZeroOnFirst(150, sign=1.0), contamination=0.5, novelty=False
    )
    with pytest.raises(FloatingPointError, match="not finite"):
        det.fit(X)


@pytest.mark.parametrize("bandwidth", [0.5, 2.0])
def test_points_outside_a_bounded_support_are_outliers(planted, bandwidth):
    X, _ = planted
    inliers = X[:195]
    tophat = KernelDensity(kernel="tophat", bandwidth=bandwidth)
    det = EBFlowOutlierDetector(estimator=tophat, contamination=0.05).fit(inliers)
    assert np.isfinite(det.score_samples(inliers)).all() and np.isfinite(det.offset_)
    # The planted outliers lie more than 2 from every inlier; the others far beyond.
    far = np.vstack([X[195:], [[50.0, 50.0], [-30.0, 0.0], [0.0, 1e6]]])
    assert np.all(np.isneginf(det.score_samples(far)))
    assert np.all(np.isneginf(det.decision_function(far)))
    assert np.array_equal(det.predict(far), np.full(len(far), -1))
    assert np.array_equal(det.predict(X), np.where(det.decision_function(X) < 0, -1, 1))


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


def test_random_state_makes_the_default_detector_reproducible(planted):
    X, _ = planted
    X = X[::2]  # 100 rows: three fits of the default flow in a few seconds
    first = EBFlowOutlierDetector(random_state=0).fit(X)
    again = EBFlowOutlierDetector(random_state=0).fit(X)
    other = EBFlowOutlierDetector(random_state=1).fit(X)
    # The default flow gets the seed as it is.
    assert first.estimator_.get_params() == EBFlowDensity(random_state=0).get_params()
    assert first.offset_ == again.offset_
    assert np.array_equal(first.decision_function(X), again.decision_function(X))
    assert np.array_equal(first.predict(X), again.predict(X))
    assert first.offset_ != other.offset_
    assert not np.allclose(first.decision_function(X), other.decision_function(X))


def test_random_state_seeds_a_given_estimator_like_bagging(planted):
    X, _ = planted
    unseeded = tiny(random_state=None)
    first = detector(estimator=unseeded, random_state=3).fit(X)
    again = detector(estimator=unseeded, random_state=3).fit(X)
    other = detector(estimator=unseeded, random_state=4).fit(X)
    expected = np.random.RandomState(3).randint(np.iinfo(np.int32).max)
    assert first.estimator_.random_state == again.estimator_.random_state == expected
    assert unseeded.random_state is None  # the given estimator is not changed
    assert np.array_equal(first.decision_function(X), again.decision_function(X))
    assert np.array_equal(first.predict(X), again.predict(X))
    assert not np.allclose(first.decision_function(X), other.decision_function(X))


def test_random_state_none_keeps_the_estimators_own_seed(planted):
    X, _ = planted
    det = detector().fit(X)  # tiny(random_state=0)
    assert det.random_state is None and det.estimator_.random_state == 0
    reference = tiny().fit(X)
    assert np.array_equal(det.score_samples(X), reference.score_samples(X))


def test_random_state_reaches_nested_estimators_and_skips_unseeded_ones(planted):
    X, _ = planted
    pipe = make_pipeline(StandardScaler(), GaussianMixture(n_components=2))
    det = EBFlowOutlierDetector(estimator=pipe, random_state=0).fit(X)
    expected = np.random.RandomState(0).randint(np.iinfo(np.int32).max)
    assert det.estimator_.get_params()["gaussianmixture__random_state"] == expected
    again = EBFlowOutlierDetector(estimator=pipe, random_state=0).fit(X)
    assert np.array_equal(det.decision_function(X), again.decision_function(X))
    kde = EBFlowOutlierDetector(estimator=KernelDensity(), random_state=0).fit(X)
    assert kde.estimator_.get_params() == KernelDensity().get_params()


def test_random_state_instance_draws_a_new_seed_per_fit(planted):
    X, _ = planted
    rng = np.random.RandomState(0)
    det = EBFlowOutlierDetector(estimator=GaussianMixture(), random_state=rng)
    seeds = [det.fit(X).estimator_.random_state for _ in range(2)]
    reference = np.random.RandomState(0).randint(np.iinfo(np.int32).max, size=2)
    assert seeds == list(reference)


@pytest.mark.parametrize("random_state", ["bogus", 1.5, -1])
def test_bad_random_state(planted, random_state):
    X, _ = planted
    with pytest.raises(ValueError, match="random_state"):
        detector(random_state=random_state).fit(X)


@pytest.mark.parametrize(
    ("n_samples", "contamination", "fraction"),
    [
        (2_500, 0.05, 0.2424),  # 30 / (0.05 * 2500) = 0.24, a little above
        (10_000, 0.01, 0.3),  # contamination="auto": 3,000 validation rows
        (1_000, 0.01, 0.1),  # would need all the rows: cross-fitted, usual fraction
        (100_000, 0.01, 0.1),  # the usual 10 % is enough
    ],
)
def test_default_flow_holds_out_enough_rows_to_set_the_threshold(
    n_samples: int, contamination: float, fraction: float
) -> None:
    """Up to 30 % of the rows held out by the default flow (one fit) instead of the 5 more
    fits of a cross-fitted threshold; a given estimator and ``novelty=False`` keep theirs."""
    made = EBFlowOutlierDetector()._make_estimator(n_samples, contamination)
    assert made.validation_fraction == pytest.approx(fraction, abs=1e-4)
    assert made.validation_fraction * n_samples * contamination >= 30 or fraction == 0.1
    outlier = EBFlowOutlierDetector(novelty=False)._make_estimator(n_samples, contamination)
    assert outlier.validation_fraction == 0.1
    given = EBFlowOutlierDetector(estimator=EBFlowDensity())
    assert given._make_estimator(n_samples, contamination).validation_fraction == 0.1


def test_default_detector_sets_its_threshold_in_one_fit(monkeypatch):
    """2,500 rows at contamination 0.05: the validation rows set the threshold, no folds."""
    fits = []
    original = EBFlowDensity.fit

    def counted(self: EBFlowDensity, X: object, y: object = None) -> EBFlowDensity:
        fits.append(len(X))
        return original(self.set_params(max_iter=3), X, y)

    monkeypatch.setattr(EBFlowDensity, "fit", counted)
    X = np.random.default_rng(0).normal(size=(2_500, 2))
    det = fit_quietly(EBFlowOutlierDetector(contamination=0.05, random_state=0), X)
    assert fits == [2_500] and det.calibration_ == "validation"
    assert len(det.estimator_._validation_index) * 0.05 >= 30
