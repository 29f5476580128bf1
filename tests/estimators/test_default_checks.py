"""scikit-learn's estimator checks on the default configuration of every public estimator.

``test_density.py`` and ``test_outlier.py`` run the checks on fast configurations; here
each public estimator is checked exactly as a user gets it, nothing passed, and every
check must pass, none expected to fail. (The default outlier detector is a novelty
detector, ``novelty=True`` as in ``LocalOutlierFactor``: its threshold is set on held-out
scores, it has no ``fit_predict``, and scikit-learn does not count its flagged training
rows; ``novelty=False`` passes those counts, ``test_outlier.py``.) The checks that fit the
default flow to non-trivial data take most of the time (the detector's held-out threshold
fits 6 flows on such small data): they are marked ``slow``; the API checks run in the
default selection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sklearn.utils.estimator_checks import estimator_checks_generator

from skebflow import EBFlowDensity, EBFlowOutlierDetector
from tests.helpers import ignore_convergence

pytestmark = ignore_convergence

#: The checks that took more than about a second for either default estimator.
SLOW_CHECKS = frozenset(
    {
        "check_classifier_data_not_an_array",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_outliers_fit_predict",
        "check_outliers_train",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
    }
)


def _check_name(check: Callable) -> str:
    """Return ``check_x`` or ``check_x(option=value)``, as scikit-learn names checks."""
    options = ", ".join(f"{key}={value}" for key, value in check.keywords.items())
    return f"{check.func.__name__}({options})" if options else check.func.__name__


def _default_checks() -> Iterator[object]:
    for default in (EBFlowDensity(), EBFlowOutlierDetector()):
        for estimator, check in estimator_checks_generator(default, legacy=True):
            marks = [pytest.mark.slow] if check.func.__name__ in SLOW_CHECKS else []
            name = f"{type(estimator).__name__}()-{_check_name(check)}"
            yield pytest.param(estimator, check, marks=marks, id=name)


def test_the_estimators_are_the_defaults():
    for default in (EBFlowDensity(), EBFlowOutlierDetector()):
        assert repr(default) == f"{type(default).__name__}()"


@pytest.mark.parametrize(("estimator", "check"), list(_default_checks()))
def test_default_configuration_passes_sklearn_checks(estimator: object, check: Callable) -> None:
    check(estimator)
