"""Warnings point at the user's line, whatever skebflow and scikit-learn frames lie between."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning, DataDimensionalityWarning
from sklearn.model_selection import cross_val_score

from skebflow import EBFlowDensity
from skebflow.utils import user_stacklevel

TINY = {"max_iter": 1, "n_blocks": 1, "hidden_features": 4, "random_state": 0}


def _degenerate() -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 1))
    return np.c_[a, 2.0 * a]  # two collinear columns


def _recorded(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call()
    return record


def test_a_function_outside_the_package_gets_its_own_line():
    def outside() -> int:
        return user_stacklevel()

    assert outside() == 1


def test_fit_and_partial_fit_warnings_point_at_the_callers_line():
    X = _degenerate()
    for call in (
        lambda: EBFlowDensity(**TINY).fit(X),
        lambda: EBFlowDensity(**TINY).partial_fit(X),
    ):
        record = _recorded(call)
        kinds = {w.category for w in record}
        assert DataDimensionalityWarning in kinds
        assert {w.filename for w in record} == {__file__}


def test_a_fit_inside_scikit_learn_points_at_the_users_call():
    record = _recorded(
        lambda: cross_val_score(EBFlowDensity(**TINY), _degenerate(), cv=2, error_score="raise")
    )
    mine = [w for w in record if w.category in (ConvergenceWarning, DataDimensionalityWarning)]
    assert mine and {w.filename for w in mine} == {__file__}
