"""The teachers of the benchmarks: the flow teacher of ``bench nll`` and ``bench truth``,
the Gaussian-mixture teachers of ``bench quality`` (``skebflow.datasets._teachers``)."""

import itertools

import numpy as np
import pytest
from scipy import special, stats

from skebflow.datasets._teachers import (
    make_mixture_teacher,
    make_teacher,
    mixture_teacher_log_density,
    sample_mixture_teacher,
    sample_teacher,
    teacher_log_density,
)


# The flow teacher of `bench nll` and `bench truth`.
def test_teacher_is_deterministic_and_leaves_global_rng_alone():
    state = np.random.get_state()  # noqa: NPY002 (checking that it is left alone)
    a = sample_teacher(make_teacher(3, random_state=0), 20, random_state=1)
    b = sample_teacher(make_teacher(3, random_state=0), 20, random_state=1)
    c = sample_teacher(make_teacher(3, random_state=0), 20, random_state=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (20, 3) and a.dtype == np.float64
    after = np.random.get_state()  # noqa: NPY002
    np.testing.assert_array_equal(state[1], after[1])


def test_teacher_density_is_normalized_in_2d():
    teacher = make_teacher(2, random_state=3)
    samples = sample_teacher(teacher, 20_000, random_state=0)
    low, high = samples.min(0) - 4.0, samples.max(0) + 4.0
    step = (high - low) / 400
    axes = [low[k] + step[k] * (np.arange(400) + 0.5) for k in range(2)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    mass = np.exp(teacher_log_density(teacher, grid)).sum() * step.prod()
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_teacher_samples_follow_its_density():
    # The mean log-density of its own samples is the negative entropy; a histogram of
    # the samples along the first axis matches the marginal of the density.
    teacher = make_teacher(1, random_state=5)
    samples = sample_teacher(teacher, 50_000, random_state=0)[:, 0]
    edges = np.quantile(samples, np.linspace(0.0, 1.0, 11))
    fine = np.linspace(edges[0], edges[-1], 20_001)
    density = np.exp(teacher_log_density(teacher, fine[:, None]))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    predicted = np.diff(np.interp(edges, fine, cdf))
    np.testing.assert_allclose(predicted, 0.1, atol=0.01)


def test_teacher_rejects_bad_input():
    with pytest.raises(ValueError, match="n_features"):
        make_teacher(0)
    teacher = make_teacher(2, random_state=0)
    with pytest.raises(ValueError, match="n_samples"):
        sample_teacher(teacher, 0)
    with pytest.raises(ValueError, match="shape"):
        teacher_log_density(teacher, np.zeros((3, 5)))


# The mixture teachers of `bench quality`.
def test_mixture_teacher_matches_scipy():
    teacher = make_mixture_teacher(5, n_components=3, random_state=0)
    X = np.concatenate(
        [
            sample_mixture_teacher(teacher, 50, random_state=1),
            np.random.default_rng(2).normal(scale=10.0, size=(20, 5)),  # far from the modes
        ]
    )
    terms = [
        np.log(w) + stats.multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(teacher.weights, teacher.means, teacher.covariances, strict=True)
    ]
    expected = special.logsumexp(terms, axis=0)
    np.testing.assert_allclose(mixture_teacher_log_density(teacher, X), expected, rtol=1e-9)
    far = mixture_teacher_log_density(teacher, np.full((1, 5), 1e4))
    assert np.isfinite(far).all() and far[0] < -1e5


def test_mixture_teacher_samples_have_the_mixture_moments():
    teacher = make_mixture_teacher(3, random_state=4)
    X = sample_mixture_teacher(teacher, 200_000, random_state=0)
    w, m = teacher.weights, teacher.means
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, teacher.covariances) + np.einsum("k,ki,kj->ij", w, m, m)
    cov -= np.outer(mean, mean)
    np.testing.assert_allclose(X.mean(axis=0), mean, atol=0.01)
    np.testing.assert_allclose(np.cov(X.T), cov, atol=0.02)


def test_mixture_teacher_is_well_posed_and_deterministic():
    state = np.random.get_state()  # noqa: NPY002
    teacher = make_mixture_teacher(16, random_state=7)
    again = make_mixture_teacher(16, random_state=7)
    np.testing.assert_array_equal(teacher.covariances, again.covariances)
    assert teacher.weights.sum() == pytest.approx(1.0) and (teacher.weights > 0).all()
    assert (np.linalg.eigvalsh(teacher.covariances) > 0.04).all()
    gaps = [np.linalg.norm(a - b) for a, b in itertools.combinations(teacher.means, 2)]
    assert 1.0 < np.median(gaps) < 4.0  # about `separation` = 2.5 apart: overlapping
    with pytest.raises(ValueError, match="read-only"):
        teacher.means[0, 0] = 1.0
    np.testing.assert_array_equal(state[1], np.random.get_state()[1])  # noqa: NPY002
    with pytest.raises(ValueError, match="n_features"):
        make_mixture_teacher(0)
    with pytest.raises(ValueError, match="shape"):
        mixture_teacher_log_density(teacher, np.zeros((2, 3)))
