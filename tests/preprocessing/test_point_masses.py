"""find_point_masses: discrete columns, repeated values and duplicate rows, on raw data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

from skebflow import EBFlowDensity, PointMassWarning
from skebflow.preprocessing import find_point_masses
from tests.helpers import failing_on, quietly


def _found(X: np.ndarray):
    return find_point_masses(torch.as_tensor(X, dtype=torch.float64))


def test_continuous_and_rounded_real_tables_have_none():
    rng = np.random.default_rng(0)
    assert not _found(rng.normal(size=(5000, 3)))
    assert not _found(np.round(rng.normal(size=(2000, 3)), 2))  # rounded measurements
    for load in (load_wine, load_breast_cancer, load_iris):
        assert not _found(load().data), load.__name__


def test_binary_counts_zero_inflated_and_duplicates_are_found():
    rng = np.random.default_rng(0)
    smooth = rng.normal(size=(1000, 1))
    binary = (rng.uniform(size=(1000, 1)) > 0.5).astype(float)
    counts = rng.poisson(3.0, size=(1000, 1)).astype(float)
    inflated = np.where(rng.uniform(size=(1000, 1)) < 0.4, 0.0, rng.normal(size=(1000, 1)))
    found = _found(np.hstack([smooth, binary, counts, inflated]))
    assert found.discrete == [1, 2] and found.repeated == [3] and not found.integer
    rows = rng.normal(size=(100, 3))
    duplicated = _found(np.vstack([rows, rows[:10]]))
    assert duplicated and duplicated.duplicate_fraction == pytest.approx(10 / 110)
    assert _found(np.hstack([binary, counts])).integer


def test_few_rows_are_no_evidence_of_a_discrete_column():
    assert _found(np.array([[0.0], [1.0]] * 10)).discrete == []
    assert _found(np.array([[0.0], [1.0]] * 20)).discrete == [0]


def test_the_estimator_warns_names_the_remedy_and_bounds_the_density():
    """On 0/1 columns the held-out log-density used to climb to +13 nats per sample in 30
    epochs with no warning; it is now warned of and bounded by the jitter."""
    X = (np.random.default_rng(0).uniform(size=(1000, 2)) > 0.5).astype(float)
    with quietly(), pytest.warns(PointMassWarning, match=r"dequantize=True") as seen:
        est = EBFlowDensity(max_iter=10, random_state=0).fit(X)
    assert "column(s) [0, 1] take only a few distinct values" in str(seen[0].message)
    assert est.jitter_ > 0
    with quietly(), failing_on(PointMassWarning):
        EBFlowDensity(
            max_iter=2, dequantize=True, preprocessing="logit", bounds=(0, 2), random_state=0
        ).fit(X)
