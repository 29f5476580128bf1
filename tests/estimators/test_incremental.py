"""partial_fit: chunked training that continues the trainer and ends near a full fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_moons

from skebflow import EBFlowDensity
from tests.helpers import fit_quietly, quietly, tiny


@pytest.fixture(scope="module")
def moons():
    X = make_moons(2000, noise=0.1, random_state=0)[0]
    X_test = make_moons(2000, noise=0.1, random_state=1)[0]
    return X, X_test


def _passes(est: EBFlowDensity, chunks: list, passes: int) -> EBFlowDensity:
    for _ in range(passes):
        for chunk in chunks:
            est.partial_fit(chunk)
    return est


def test_partial_fit_over_memory_mapped_chunks_ends_near_a_full_fit(moons, tmp_path):
    X, X_test = moons
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    chunks = [mapped[i : i + 500] for i in range(0, len(X), 500)]
    est = _passes(EBFlowDensity(random_state=0), chunks, passes=5)
    full = fit_quietly(EBFlowDensity(random_state=0, max_iter=20), X)
    assert est.n_iter_ == 20 and len(est.loss_curve_) == 20
    untrained = EBFlowDensity(random_state=0, max_iter=1).partial_fit(X[:2]).score(X_test)
    assert est.score(X_test) > untrained + 0.5
    assert abs(est.score(X_test) - full.score(X_test)) < 0.15


def test_every_call_continues_and_leaves_a_usable_model(moons):
    X, X_test = moons
    est = EBFlowDensity(random_state=0)
    before = None
    for k, chunk in enumerate(np.array_split(X, 4), start=1):
        est.partial_fit(chunk)
        assert est.n_iter_ == k
        with torch.no_grad():
            assert est.log_normalizer_ == float(est.flow_.log_normalizer())
        scores = est.score_samples(X_test)
        assert np.all(np.isfinite(scores))
        assert before is None or not np.array_equal(scores, before)
        before = scores
    twin = _passes(EBFlowDensity(random_state=0), list(np.array_split(X, 4)), passes=1)
    np.testing.assert_array_equal(twin.score_samples(X_test), before)  # reproducible


def test_fit_preprocessing_sets_the_statistics_that_the_chunks_use(moons):
    X, _ = moons
    ordered = X[np.argsort(X[:, 0])]  # sorted chunks: the first one is not typical
    est = EBFlowDensity(random_state=0).fit_preprocessing(X)
    est.partial_fit(ordered[:500])
    standardize = est.preprocessing_.transforms[0]
    np.testing.assert_allclose(standardize.mean.numpy(), X.mean(axis=0))
    np.testing.assert_allclose(standardize.scale.numpy(), X.std(axis=0))
    alone = EBFlowDensity(random_state=0).partial_fit(ordered[:500])
    assert not np.allclose(alone.preprocessing_.transforms[0].mean.numpy(), X.mean(axis=0))


def test_a_chunk_of_another_width_is_refused_and_fit_starts_over(moons):
    X, X_test = moons
    est = EBFlowDensity(random_state=0, max_iter=2).partial_fit(X[:500])
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(np.c_[X[:10], X[:10, 0]])
    with quietly():
        refit = est.fit(X)
        fresh = clone(est).fit(X)
    np.testing.assert_array_equal(refit.score_samples(X_test), fresh.score_samples(X_test))
    assert refit.n_iter_ == fresh.n_iter_


def test_partial_fit_over_the_blocks_of_a_dask_array(moons):
    da = pytest.importorskip(
        "dask.array", reason="the [dask] extra is not installed; the test runs where it is"
    )
    X, X_test = moons
    blocks = da.from_array(X, chunks=(500, 2))
    est = EBFlowDensity(random_state=0)
    for block in blocks.blocks:
        est.partial_fit(block.compute())
    numpy_chunks = _passes(EBFlowDensity(random_state=0), list(np.array_split(X, 4)), 1)
    np.testing.assert_array_equal(est.score_samples(X_test), numpy_chunks.score_samples(X_test))


def test_partial_fit_after_fit_continues_the_fitted_model():
    """Before, partial_fit after fit started over from a new flow, bit-identical to a fresh
    estimator, discarding the fit."""
    X = np.random.default_rng(0).normal(size=(300, 2)) * [1.0, 3.0]
    est = fit_quietly(tiny(random_state=0, max_iter=20, learning_rate=1e-2), X)
    fitted = est.score(X)
    est.set_params(learning_rate=1e-4).partial_fit(X)
    fresh = tiny(random_state=0, learning_rate=1e-4).partial_fit(X)
    assert est.n_iter_ == 1
    # One small step from the fitted model, far from where a fresh start is.
    assert abs(est.score(X) - fitted) < 0.01 < abs(fresh.score(X) - fitted)


def test_dequantize_checks_for_integers_on_every_training_path():
    """Only a cold fit used to check: a warm start or a later partial_fit chunk trained on
    fractional data behind a dequantized chain."""
    integers = np.random.default_rng(0).integers(0, 16, size=(200, 2)).astype(float)
    fractional = integers + 0.25
    message = "dequantize=True needs integer-valued data"
    warm = fit_quietly(tiny(dequantize=True, preprocessing="logit", warm_start=True), integers)
    with pytest.raises(ValueError, match=message):
        warm.fit(fractional)
    chunks = tiny(dequantize=True, preprocessing="logit").partial_fit(integers)
    with pytest.raises(ValueError, match=message):
        chunks.partial_fit(fractional)
    sampled = tiny(dequantize=True, preprocessing="logit").fit_preprocessing(integers)
    with pytest.raises(ValueError, match=message):
        sampled.partial_fit(fractional)
    after_fit = fit_quietly(tiny(dequantize=True, preprocessing="logit"), integers)
    with pytest.raises(ValueError, match=message):
        after_fit.partial_fit(fractional)


def test_a_warm_start_on_shifted_data_warns_of_drift():
    """Data shifted by 1e3 scored -31,359 after a warm refit (a fresh fit: -2.82) with no
    warning; data like the first fit's pass quietly."""
    from skebflow import DriftWarning
    from tests.helpers import failing_on

    rng = np.random.default_rng(0)
    est = fit_quietly(tiny(random_state=0, warm_start=True), rng.normal(size=(500, 2)))
    with quietly(), failing_on(DriftWarning):
        est.fit(rng.normal(size=(500, 2)))
    with quietly(), pytest.warns(DriftWarning, match="warm_start=False to fit afresh"):
        est.fit(rng.normal(size=(500, 2)) + 1e3)
