"""Tests of the offline toy, digits and table data sets."""

import functools
import math

import numpy as np
import pytest
from scipy import stats

from skebflow.datasets._tables import TABLE_DATASETS, load_digits_integer, load_table
from skebflow.datasets._toys import (
    TOY_DATASETS,
    make_toy,
    toy_log_density,
)

# Midpoint grid on [-7, 7]² with step 0.05: the shapes reach |x| ≤ 4, so the box leaves 8σ.
STEP = 0.05
CENTRES = -7.0 + STEP * (np.arange(280) + 0.5)
N_MC = 20_000


@functools.cache
def grid_density(name, smoothing=0.375):
    xx, yy = np.meshgrid(CENTRES, CENTRES, indexing="ij")
    logp = toy_log_density(name, np.column_stack([xx.ravel(), yy.ravel()]), smoothing=smoothing)
    return logp.reshape(xx.shape)


@functools.cache
def samples(name):
    return make_toy(name, N_MC, random_state=12345)


def test_names():
    assert TOY_DATASETS == (
        "sine",
        "swirl",
        "checkerboard",
        "moons",
        "rings",
        "gaussians",
        "pinwheel",
    )
    assert TABLE_DATASETS == ("digits", "breast_cancer", "wine", "iris", "diabetes")


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_shape_dtype_and_range(name):
    X = make_toy(name, 37, random_state=0)
    assert X.shape == (37, 2)
    assert X.dtype == np.float64
    assert np.all(np.isfinite(X))
    assert make_toy(name, 1, random_state=0).shape == (1, 2)
    # The toys span roughly [-4, 4]²
    X = samples(name)
    assert np.all(np.abs(X) < 4.5 + 6 * 0.375)
    assert np.abs(X).max() > 3.0
    logp = toy_log_density(name, X[:10])
    assert logp.shape == (10,)
    assert logp.dtype == np.float64


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_determinism_and_global_rng(name):
    state = np.random.get_state()  # noqa: NPY002 (checking that it is left alone)
    a = make_toy(name, 50, random_state=3)
    b = make_toy(name, 50, random_state=3)
    c = make_toy(name, 50, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # A generator is used in place: the same seed gives the same stream.
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(make_toy(name, 50, random_state=rng), a)
    assert not np.allclose(make_toy(name, 50, random_state=rng), a)
    make_toy(name, 5)  # random_state=None still avoids the global generator
    after = np.random.get_state()  # noqa: NPY002
    assert state[0] == after[0]
    np.testing.assert_array_equal(state[1], after[1])
    assert state[2:] == after[2:]


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_density_integrates_to_one(name):
    mass = np.exp(grid_density(name)).sum() * STEP**2
    assert abs(mass - 1.0) < 1e-3


@pytest.mark.parametrize(
    ("name", "smoothing"), [("checkerboard", 0.2), ("moons", 0.6), ("pinwheel", 0.15)]
)
def test_density_integrates_to_one_other_smoothing(name, smoothing):
    mass = np.exp(grid_density(name, smoothing)).sum() * STEP**2
    assert abs(mass - 1.0) < 1e-3


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_samples_match_negative_entropy(name):
    logp_grid = grid_density(name)
    neg_entropy = np.sum(np.exp(logp_grid) * logp_grid) * STEP**2
    logp = toy_log_density(name, samples(name))
    standard_error = logp.std(ddof=1) / math.sqrt(len(logp))
    assert abs(logp.mean() - neg_entropy) < 4 * standard_error + 1e-3


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_samples_match_binned_probabilities(name):
    # Coarse bins of side 0.5: 10×10 fine cells each.
    probs = np.exp(grid_density(name)).reshape(28, 10, 28, 10).sum(axis=(1, 3)) * STEP**2
    edges = np.linspace(-7.0, 7.0, 29)
    X = samples(name)
    counts, _, _ = np.histogram2d(X[:, 0], X[:, 1], bins=[edges, edges])
    expected = N_MC * probs.ravel()
    counts = counts.ravel()
    big = expected >= 5
    observed = np.append(counts[big], N_MC - counts[big].sum())
    expected = np.append(expected[big], N_MC - expected[big].sum())
    chi2 = np.sum((observed - expected) ** 2 / np.maximum(expected, 1.0))
    df = len(observed) - 1
    assert df > 20
    assert stats.chi2.sf(chi2, df) > 1e-4


@pytest.mark.parametrize("name", TOY_DATASETS)
@pytest.mark.parametrize("smoothing", [0.375, 0.05])
def test_log_density_finite_far_away(name, smoothing):
    t = np.linspace(-10.0, 10.0, 41)
    xx, yy = np.meshgrid(t, t)
    X = np.column_stack([xx.ravel(), yy.ravel()])
    logp = toy_log_density(name, X, smoothing=smoothing)
    assert np.all(np.isfinite(logp))
    assert logp.min() < -100


def test_checkerboard_matches_reference():
    sigma = 0.375
    rng = np.random.default_rng(0)
    X = rng.uniform(-6.0, 6.0, size=(200, 2))
    lower = np.array(
        [[-4 + 2 * i, -4 + 2 * j] for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    )
    upper = lower + 2
    dens = np.zeros(len(X))
    for lo, hi in zip(lower, upper, strict=True):
        a, b = (lo - X) / sigma, (hi - X) / sigma
        # Differences of upper-tail probabilities where both ends are positive (accurate).
        mass = np.where(
            a > 0, stats.norm.sf(a) - stats.norm.sf(b), stats.norm.cdf(b) - stats.norm.cdf(a)
        )
        dens += np.prod(mass, axis=1)
    np.testing.assert_allclose(toy_log_density("checkerboard", X), np.log(dens / 32), rtol=1e-10)
    # Tails: the log-density keeps falling like a Gaussian far from the board.
    far = toy_log_density("checkerboard", np.array([[8.0, 0.0], [12.0, 0.0]]), smoothing=0.01)
    assert far[1] < far[0] < -1e4


def test_gaussians_matches_reference():
    sigma = 0.375
    X = np.random.default_rng(1).uniform(-5.0, 5.0, size=(100, 2))
    t = 2 * np.pi * np.arange(8) / 8
    means = 3 * np.column_stack([np.cos(t), np.sin(t)])
    dens = sum(stats.multivariate_normal(m, sigma**2 * np.eye(2)).pdf(X) for m in means) / 8
    np.testing.assert_allclose(toy_log_density("gaussians", X), np.log(dens), rtol=1e-10)


def _untwist(X, rate=0.6):
    angle = -rate * np.hypot(X[:, 0], X[:, 1])
    c, s = np.cos(angle), np.sin(angle)
    return np.column_stack([c * X[:, 0] - s * X[:, 1], s * X[:, 0] + c * X[:, 1]])


@pytest.mark.parametrize("smoothing", [0.375, 0.1])
def test_pinwheel_matches_reference(smoothing):
    # Untwist, then an equal-weight mixture of 5 rotated anisotropic Gaussians (scipy).
    X = np.random.default_rng(2).uniform(-4.5, 4.5, size=(300, 2))
    radial_std = math.hypot(0.5, smoothing)
    dens = np.zeros(len(X))
    for k in range(5):
        t = 2 * np.pi * k / 5
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        cov = rot @ np.diag([radial_std**2, smoothing**2]) @ rot.T
        dens += stats.multivariate_normal(2.0 * rot[:, 0], cov).pdf(_untwist(X)) / 5
    logp = toy_log_density("pinwheel", X, smoothing=smoothing)
    np.testing.assert_allclose(logp, np.log(dens), rtol=1e-9)


def test_pinwheel_twist_preserves_area():
    # The Jacobian determinant of the untwist is 1 (central differences), so no log-det term.
    X = np.random.default_rng(3).uniform(-4.0, 4.0, size=(50, 2))
    h = 1e-5
    columns = [(_untwist(X + h * e) - _untwist(X - h * e)) / (2 * h) for e in np.eye(2)]
    jacobian = np.stack(columns, axis=-1)
    np.testing.assert_allclose(np.linalg.det(jacobian), 1.0, atol=1e-6)
    # and make_toy's samples are the twisted arms: untwisted, they have the arms' moments.
    arms = _untwist(make_toy("pinwheel", N_MC, random_state=1))
    radius = np.hypot(arms[:, 0], arms[:, 1])
    assert abs(np.median(radius) - 2.0) < 0.03


def test_errors():
    with pytest.raises(ValueError, match="valid names"):
        make_toy("spiral")
    with pytest.raises(ValueError, match="valid names"):
        toy_log_density("spiral", np.zeros((1, 2)))
    for smoothing in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="smoothing"):
            make_toy("sine", 10, smoothing=smoothing)
        with pytest.raises(ValueError, match="smoothing"):
            toy_log_density("sine", np.zeros((1, 2)), smoothing=smoothing)
    for n in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n_samples"):
            make_toy("sine", n)
    with pytest.raises(ValueError, match="shape"):
        toy_log_density("moons", np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        toy_log_density("moons", np.array([[np.nan, 0.0]]))


def test_digits():
    train, test = load_digits_integer(random_state=0)
    assert train.shape[1] == test.shape[1] == 64
    assert len(train) + len(test) == 1797
    assert len(test) == math.ceil(0.2 * 1797)
    both = np.concatenate([train, test])
    assert both.dtype == np.float64
    np.testing.assert_array_equal(both, np.round(both))
    assert both.min() == 0 and both.max() == 16
    train2, test2 = load_digits_integer(random_state=0)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)
    train3, _ = load_digits_integer(random_state=1)
    assert not np.array_equal(train, train3)
    # Same multiset of images whatever the shuffle.
    np.testing.assert_array_equal(
        np.sort(both.sum(axis=1)), np.sort(np.concatenate([train3, _]).sum(axis=1))
    )
    small_train, small_test = load_digits_integer(random_state=0, test_fraction=0.5)
    assert len(small_test) == 899 and len(small_train) == 898
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            load_digits_integer(test_fraction=bad)


TABLE_SHAPES = {
    "digits": (1797, 64),
    "breast_cancer": (569, 24),
    "wine": (178, 13),
    "iris": (150, 4),
    "diabetes": (442, 10),
}


@pytest.mark.parametrize("name", TABLE_DATASETS)
def test_table_split_shapes_and_determinism(name):
    rows, columns = TABLE_SHAPES[name]
    state = np.random.get_state()  # noqa: NPY002 (checking that it is left alone)
    train, test = load_table(name, random_state=0)
    assert train.shape == (rows - math.ceil(0.25 * rows), columns)
    assert test.shape == (math.ceil(0.25 * rows), columns)
    assert train.dtype == test.dtype == np.float64
    assert np.all(np.isfinite(train)) and np.all(np.isfinite(test))
    again, _ = load_table(name, random_state=0)
    np.testing.assert_array_equal(train, again)
    other, _ = load_table(name, random_state=1)
    assert not np.array_equal(train, other)
    after = np.random.get_state()  # noqa: NPY002
    np.testing.assert_array_equal(state[1], after[1])


@pytest.mark.parametrize("name", TABLE_DATASETS)
def test_table_dequantization_stays_within_one_grid_step(name):
    train, test = load_table(name, random_state=5)
    raw_train, raw_test = load_table(name, random_state=5, dequantize=False)
    noisy, raw = np.concatenate([train, test]), np.concatenate([raw_train, raw_test])
    if name == "breast_cancer":  # log1p after the noise
        noisy, raw = np.expm1(noisy), np.expm1(raw)
    noise = noisy - raw
    assert noise.min() >= -1e-9
    # No two distinct recorded values of a column are closer than its noise width, and
    # every value moved: continuous, no ties left (iris repeats a row; sex has 2 values).
    for j in range(raw.shape[1]):
        values = np.unique(raw[:, j])
        width = np.diff(values).min() if len(values) > 1 else 1.0
        assert noise[:, j].max() < width * (1 + 1e-9) + 1e-12
        assert noise[:, j].max() > 0.5 * width
    assert len(np.unique(noisy, axis=0)) == len(noisy)


def test_table_contents():
    train, test = load_table("digits", random_state=0)
    both = np.concatenate([train, test])
    assert both.min() >= 0 and both.max() < 17
    raw, _ = load_table("digits", random_state=0, dequantize=False)
    np.testing.assert_array_equal(np.floor(train), raw)
    # Breast cancer: log1p of the dequantized values, no point mass left at 0.
    cancer, _ = load_table("breast_cancer", random_state=0, dequantize=False)
    assert cancer.min() > 0
    iris, _ = load_table("iris", random_state=0, dequantize=False)
    assert len(np.unique(np.concatenate([iris, _]), axis=0)) == 149  # one repeated row
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            load_table("iris", test_fraction=bad)
    with pytest.raises(ValueError, match="valid names"):
        load_table("titanic")
