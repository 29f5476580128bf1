"""find_degeneracy: constant and collinear columns in the preprocessed training data.

What the estimator does with degenerate data is tested in
``tests/estimators/test_degenerate_data.py``.
"""

from __future__ import annotations

import torch

from skebflow.preprocessing._degeneracy import find_degeneracy


def test_find_degeneracy_sees_near_collinearity_and_ignores_independent_columns():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, generator=g, dtype=torch.float64)
    near = a[:, 1] - 2.0 * a[:, 2] + 1e-9 * torch.randn(500, generator=g, dtype=torch.float64)
    found = find_degeneracy(torch.cat([a, near[:, None]], dim=1))
    assert found.collinear == [[1, 2, 3]] and not found.constant
    assert not find_degeneracy(a + 1e-3 * torch.randn(500, 3, generator=g, dtype=torch.float64))
