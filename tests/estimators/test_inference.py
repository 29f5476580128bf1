"""A fitted flow's inference (``skebflow.estimators._inference``): in batches, bounded
memory, and the same answers across batch boundaries; exact and Langevin samples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import skebflow.estimators._inference as inference
from skebflow import EBFlowDensity
from tests.helpers import fit_quietly, tiny

ROWS = 50
BATCH = 7  # 50 rows: seven full batches and one of one row


@pytest.fixture(scope="module")
def fitted() -> EBFlowDensity:
    X = np.random.default_rng(0).normal(size=(200, 3)) * [1.0, 2.0, 0.5]
    return fit_quietly(tiny(max_iter=10, device="auto"), X, ConvergenceWarning)


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(ROWS, 3))


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(inference, "INFERENCE_BATCH", BATCH)


def test_scores_and_gradients_do_not_depend_on_the_batches(fitted, rows, monkeypatch):
    whole = fitted.score_samples(rows), fitted.score_gradient(rows)
    monkeypatch.setattr(inference, "INFERENCE_BATCH", BATCH)
    batched = fitted.score_samples(rows), fitted.score_gradient(rows)
    for a, b in zip(whole, batched, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("small_batches")
def test_rows_outside_the_support_are_found_in_every_batch(rows):
    X = np.random.default_rng(0).uniform(size=(200, 3))
    est = EBFlowDensity(
        preprocessing="logit", bounds=(0.0, 1.0), max_iter=2, n_blocks=1, random_state=0
    )
    fit_quietly(est, X, ConvergenceWarning)
    inside = np.random.default_rng(2).uniform(size=(ROWS, 3))
    inside[[3, 20, 49], 1] = 1.5  # in the first, a middle and the last batch
    scores = est.score_samples(inside)
    assert np.isneginf(scores[[3, 20, 49]]).all()
    assert np.isfinite(np.delete(scores, [3, 20, 49])).all()
    with pytest.raises(ValueError, match=r"outside .* \(in rows 0 to 6\)"):
        est.score_gradient(inside)


@pytest.mark.usefixtures("small_batches")
def test_samples_fill_the_output_batch_by_batch(fitted):
    draws = fitted.sample(ROWS, random_state=0)
    assert draws.shape == (ROWS, 3) and draws.dtype == np.float64
    assert np.isfinite(draws).all()
    np.testing.assert_array_equal(fitted.sample(ROWS, random_state=0), draws)
    assert len(np.unique(draws[:, 0])) == ROWS  # every batch draws fresh noise


def test_a_memory_map_is_scored_without_loading_it(fitted, rows, tmp_path, small_batches):
    np.save(tmp_path / "rows.npy", rows)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    np.testing.assert_allclose(fitted.score_samples(mapped), fitted.score_samples(rows))
    np.testing.assert_allclose(fitted.score_gradient(mapped), fitted.score_gradient(rows))


def test_langevin_refinement_keeps_the_distribution_of_exact_samples(fitted):
    exact = fitted.sample(2000, random_state=0)
    refined = fitted.sample(2000, random_state=0, method="langevin", n_steps=10)
    assert refined.shape == exact.shape and not np.array_equal(refined, exact)
    np.testing.assert_array_equal(
        fitted.sample(2000, random_state=0, method="langevin", n_steps=10), refined
    )
    scale = exact.std(axis=0)
    np.testing.assert_allclose(refined.mean(axis=0), exact.mean(axis=0), atol=0.1 * scale.max())
    np.testing.assert_allclose(refined.std(axis=0), scale, rtol=0.1)
    # Mean model log-density: an MCMC kernel that leaves the model invariant keeps it.
    assert abs(fitted.score(refined) - fitted.score(exact)) < 0.1


@pytest.mark.parametrize(
    ("options", "match"),
    [({"method": "gibbs"}, "method must be"), ({"n_steps": 5}, "n_steps applies")],
)
def test_bad_sampling_options(fitted, options, match):
    with pytest.raises(ValueError, match=match):
        fitted.sample(3, **options)
