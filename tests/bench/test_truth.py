"""``bench truth`` (``--quick``): each objective's own optimum, started from the truth."""

import itertools
import json

import pytest
import torch

from skebflow.bench._cli import main
from skebflow.bench._truth import TRUTH_OBJECTIVES, run_truth
from tests.bench.helpers import is_finite_float


def test_truth_quick(tmp_path):
    assert main(["truth", "--quick", "--output", str(tmp_path), "--log", "quiet"]) == 0
    payload = json.loads((tmp_path / "truth.json").read_text())
    records = payload["results"]
    for name in TRUTH_OBJECTIVES:
        rows = [r for r in records if r["objective"] == name]
        assert [r["iteration"] for r in rows] == [0, 2, 4]
        # Started at the truth: no excess; L-BFGS with a Wolfe line search only goes down.
        assert abs(rows[0]["excess_per_dim"]) < 1e-6
        losses = [r["loss"] for r in rows]
        assert all(b <= a + 1e-6 for a, b in itertools.pairwise(losses))
        assert all(is_finite_float(r["excess_per_dim"]) for r in rows)
    assert "| iteration |" in (tmp_path / "truth.md").read_text()


def test_maximum_likelihood_from_the_truth_finds_a_better_training_fit():
    # The MLE fits its own sample better than the truth does (by about k / (2n) nats),
    # and is then worse on fresh data: the statistical floor in miniature.
    records = run_truth(
        features=3,
        n_train=300,
        n_test=4000,
        objectives=("ml",),
        iterations=60,
        report_every=60,
        dtype=torch.float64,
        log=lambda line: None,
    )
    start, end = records[0], records[-1]
    k = 2 * (3 * 3 + 3)
    assert start["loss"] - end["loss"] > 0.25 * k / (2 * 300) / 3
    assert end["excess_per_dim"] > 0


def test_truth_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Unknown objectives"):
        run_truth(objectives=("ssm",), log=lambda line: None)
    with pytest.raises(ValueError, match="iterations"):
        run_truth(iterations=0, log=lambda line: None)
