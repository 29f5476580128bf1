"""find_gross_outliers: values that would set the standardization, named by row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skebflow import EBFlowDensity, GrossOutlierWarning
from skebflow.preprocessing import find_gross_outliers
from tests.helpers import failing_on, quietly


def _found(X: np.ndarray):
    return find_gross_outliers(torch.as_tensor(X, dtype=torch.float64))


def test_heavy_tails_and_harmless_values_are_not_gross_outliers():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 2))
    assert not _found(X)
    X[17, 1] = 1e4  # harmless to the fit (held-out -2.845 against -2.833 without it)
    assert not _found(X)
    assert not _found(rng.standard_cauchy(size=(1000, 3)))
    assert not _found(rng.lognormal(sigma=2.0, size=(1000, 3)))
    binary = (rng.uniform(size=(1000, 1)) > 0.7).astype(float) * 1e12  # MAD 0: not judged
    assert not _found(binary)


def test_gross_outliers_are_named_by_row_largest_first():
    X = np.random.default_rng(0).normal(size=(1000, 3))
    X[17, 1], X[400, 2], X[401, 0] = 1e10, -1e15, 3e8
    found = _found(X)
    assert found.n_rows == 3
    assert [cell[:3] for cell in found.cells] == [(400, 2, -1e15), (17, 1, 1e10), (401, 0, 3e8)]
    assert "row 400, column 2: -1e+15" in found.message()


@pytest.mark.parametrize("value", [1e10, 1e15])
def test_the_estimator_warns_naming_the_row_before_training(value):
    """Before, 1e10 silently dropped the held-out score from -2.8 to -22, and 1e15 ended
    in a FloatingPointError whose advice (a lower learning rate) did not help."""
    X = np.random.default_rng(0).normal(size=(1000, 2))
    X[17, 1] = value
    with quietly(), pytest.warns(GrossOutlierWarning, match="row 17, column 1"):
        try:
            EBFlowDensity(max_iter=2, random_state=0).fit(X)
        except FloatingPointError:
            pass  # training on such data may still fail; it was warned of first
    with quietly(), failing_on(GrossOutlierWarning):
        EBFlowDensity(max_iter=2, random_state=0).fit(np.delete(X, 17, axis=0))
