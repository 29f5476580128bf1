"""Degenerate training data are named in a warning and give a bounded density.

``find_degeneracy`` itself is tested in ``tests/preprocessing/test_degeneracy.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import DataDimensionalityWarning

from skebflow import EBFlowDensity
from skebflow.estimators import DEGENERATE_JITTER
from tests.helpers import failing_on, fit_quietly

PARAMS = {"max_iter": 40, "random_state": 0}


def _data(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) @ np.array([[1.0, 0.4], [0.0, 0.8]])


def test_a_constant_column_is_named_and_its_density_is_bounded():
    X, X_test = _data(), _data(seed=1)
    plain = fit_quietly(EBFlowDensity(**PARAMS), X)
    with_column = np.c_[X, np.full(len(X), 3.0)]
    with pytest.warns(DataDimensionalityWarning, match=r"constant column\(s\) \[2\]") as record:
        est = EBFlowDensity(**PARAMS).fit(with_column)
    assert record[0].filename == __file__  # the warning points at the user's call
    assert est.jitter_ == DEGENERATE_JITTER
    # The column is learned as N(3, jitter²): about -log(sqrt(2π) jitter) = 5.99 nats more.
    gain = est.score(np.c_[X_test, np.full(len(X_test), 3.0)]) - plain.score(X_test)
    expected = -np.log(np.sqrt(2 * np.pi) * DEGENERATE_JITTER)
    assert gain == pytest.approx(expected, abs=0.3)
    off = np.c_[X_test[:5], np.full(5, 4.0)]  # one unit off the constant
    scores = est.score_samples(off)
    assert np.all(np.isfinite(scores))
    assert np.all(scores < -0.25 / DEGENERATE_JITTER**2)


def test_a_duplicated_column_is_named_and_the_score_stays_bounded():
    X, X_test = _data(), _data(seed=1)
    with pytest.warns(DataDimensionalityWarning, match=r"collinear columns \[0, 2\]"):
        est = EBFlowDensity(**PARAMS).fit(np.c_[X, X[:, 0]])
    train = est.score(np.c_[X, X[:, 0]])
    test = est.score(np.c_[X_test, X_test[:, 0]])
    plain = fit_quietly(EBFlowDensity(**PARAMS), X)
    # Bounded: at most one jitter-wide direction's worth above the plain fit.
    assert train - plain.score(X) < -np.log(DEGENERATE_JITTER) + 1.0
    assert abs(train - test) < 0.5


def test_more_columns_than_rows_gets_a_warning_that_says_what_can_be_learned():
    X = np.random.default_rng(0).normal(size=(10, 50))
    with pytest.warns(UserWarning) as record:
        EBFlowDensity(max_iter=2, random_state=0).fit(X)
    messages = [str(w.message) for w in record]
    assert any("10 training rows for 50 features" in m for m in messages)
    assert any("too few for a validation split" in m for m in messages)


def test_ordinary_data_get_no_degeneracy_warning():
    with failing_on(DataDimensionalityWarning):
        est = EBFlowDensity(max_iter=2, random_state=0).fit(_data(200))
    assert est.jitter_ == 0.0
