"""EBFlowDensity: scikit-learn compatibility, workflows, normalization and errors."""

from __future__ import annotations

import functools
import pickle
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from skebflow import EBFlowDensity
from skebflow.datasets._toys import make_toy
from tests.helpers import fit_quietly, ignore_convergence, tiny

pytestmark = ignore_convergence

#: This module's estimator: tiny, one more epoch, in batches of 64.
fast = functools.partial(tiny, max_iter=3, batch_size=64)


@pytest.fixture(scope="module")
def gaussian_data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0, 0, 0.5]])


@pytest.fixture(scope="module")
def fitted(gaussian_data) -> EBFlowDensity:
    return fast(max_iter=5).fit(gaussian_data)


@parametrize_with_checks([fast(), EBFlowDensity(random_state=0, device="cpu")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_pipeline(gaussian_data):
    pipe = make_pipeline(PCA(n_components=2), fast()).fit(gaussian_data)
    scores = pipe.score_samples(gaussian_data)
    assert scores.shape == (len(gaussian_data),) and np.isfinite(scores).all()
    assert np.isclose(pipe.score(gaussian_data), scores.mean())


def test_grid_search_over_objectives_with_joblib_workers(gaussian_data):
    grid = {"objective": ["ml", "ssm", "dsm", "fdssm"]}
    search = GridSearchCV(fast(), grid, cv=3, n_jobs=2).fit(gaussian_data)
    assert set(search.cv_results_["param_objective"]) == set(grid["objective"])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.objective_ == search.best_params_["objective"]


def test_cross_val_score_with_joblib_workers(gaussian_data):
    scores = cross_val_score(fast(), gaussian_data, cv=3, n_jobs=2)
    serial = cross_val_score(fast(), gaussian_data, cv=3, n_jobs=1)
    assert np.allclose(scores, serial)


def test_pickle_and_joblib_round_trips(fitted, gaussian_data, tmp_path):
    expected = fitted.score_samples(gaussian_data)
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(restored.score_samples(gaussian_data), expected)
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    assert np.array_equal(joblib.load(path).score_samples(gaussian_data), expected)
    assert np.array_equal(restored.sample(5, random_state=1), fitted.sample(5, random_state=1))


def test_model_fitted_on_cuda_unpickles_on_cpu(fitted, gaussian_data, monkeypatch):
    clone_ = pickle.loads(pickle.dumps(fitted))
    clone_.device_ = torch.device("cuda")  # as if fitted on a GPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = pickle.loads(pickle.dumps(clone_))
    assert restored.device_.type == "cpu"
    assert np.array_equal(
        restored.score_samples(gaussian_data), fitted.score_samples(gaussian_data)
    )


@pytest.mark.parametrize("objective", ["ml", "sml", "sm", "ssm", "dsm", "fdssm"])
def test_density_integrates_to_one_in_data_units(objective):
    X = make_toy("moons", 400, random_state=0) * 0.5 + 3.0
    est = fast(objective=objective, max_iter=4, n_blocks=2).fit(X)
    axis_x = np.linspace(X[:, 0].min() - 6, X[:, 0].max() + 6, 361)
    axis_y = np.linspace(X[:, 1].min() - 6, X[:, 1].max() + 6, 361)
    grid = np.stack(np.meshgrid(axis_x, axis_y, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(est.score_samples(grid)).reshape(len(axis_x), len(axis_y))
    mass = np.trapezoid(np.trapezoid(density, axis_y, axis=1), axis_x)
    assert abs(mass - 1.0) < 0.02


@settings(max_examples=6, deadline=None)
@given(a=st.floats(0.05, 20.0), b=st.floats(-50.0, 50.0))
def test_standardization_equivariance(gaussian_data, a, b):
    params = {"training_dtype": "float64", "max_iter": 2}
    base = fast(**params).fit(gaussian_data)
    moved = fast(**params).fit(a * gaussian_data + b)
    D = gaussian_data.shape[1]
    assert np.isclose(moved.score(a * gaussian_data + b), base.score(gaussian_data) - D * np.log(a))


def test_score_gradient_matches_finite_differences(fitted, gaussian_data):
    X = gaussian_data[:5]
    gradient = fitted.score_gradient(X)
    h = 1e-5
    numeric = np.empty_like(X)
    for j in range(X.shape[1]):
        step = np.zeros(X.shape[1])
        step[j] = h
        numeric[:, j] = (fitted.score_samples(X + step) - fitted.score_samples(X - step)) / (2 * h)
    assert np.allclose(gradient, numeric, atol=1e-6)


def test_same_random_state_same_numbers_and_global_rngs_untouched(gaussian_data):
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()  # noqa: NPY002 - the global state is what is checked
    first = fast().fit(gaussian_data)
    second = fast().fit(gaussian_data)
    samples = first.sample(10, random_state=3)
    assert np.array_equal(samples, second.sample(10, random_state=3))
    assert np.array_equal(first.score_samples(gaussian_data), second.score_samples(gaussian_data))
    assert torch.equal(torch_state, torch.random.get_rng_state())
    numpy_after = np.random.get_state()  # noqa: NPY002 - the global state is what is checked
    assert all(np.array_equal(x, y) for x, y in zip(numpy_state, numpy_after, strict=True))
    other = fast(random_state=1).fit(gaussian_data)
    assert not np.array_equal(
        other.score_samples(gaussian_data), first.score_samples(gaussian_data)
    )
    assert not np.array_equal(first.sample(10, random_state=4), samples)


@pytest.mark.parametrize("prepare", ["nothing", "fit_preprocessing"])
def test_not_fitted(prepare):
    """Every method of an unfitted, or only preprocessed, estimator says it is not fitted."""
    est = fast()
    if prepare == "fit_preprocessing":
        est.fit_preprocessing(np.random.default_rng(0).normal(size=(10, 2)))
    for method in (est.score_samples, est.score, est.score_gradient, est.impute):
        with pytest.raises(NotFittedError):
            method(np.zeros((2, 2)))
    with pytest.raises(NotFittedError):
        est.sample(2)
    with pytest.raises(NotFittedError):
        est.sample_conditional(np.array([[0.0, np.nan]]))
    with pytest.raises(NotFittedError):
        est.save("never-written.skebflow")


@pytest.mark.parametrize(
    ("X", "error", "match"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 1.0]]), ValueError, "NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0], [2.0, 1.0]]), ValueError, "infinity"),
        (sp.csr_matrix(np.eye(3)), TypeError, "[Ss]parse"),
        (np.array([[1 + 1j, 2.0], [0.0, 1.0], [2.0, 1.0]]), ValueError, "[Cc]omplex"),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), ValueError, "convert|string"),
        (np.zeros((0, 2)), ValueError, "0 sample"),
        (np.zeros((1, 2)), ValueError, "1 sample"),
        (np.zeros(5), ValueError, "2D array"),
    ],
)
def test_bad_training_input(X, error, match):
    with pytest.raises(error, match=match):
        fast().fit(X)


def test_wrong_feature_count_at_scoring(fitted):
    with pytest.raises(ValueError, match="X has 2 features, but EBFlowDensity is expecting 3"):
        fitted.score_samples(np.zeros((4, 2)))


@pytest.mark.parametrize("n_samples", [0, -1, 2.5, "3", True])
def test_bad_n_samples(fitted, n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(n_samples)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"objective": "nope"}, "objective"),
        ({"architecture": "resnet"}, "architecture"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
        ({"preprocessing": "whiten"}, "preprocessing"),
        ({"bounds": (1.0, 2.0, 3.0), "preprocessing": "logit"}, "bounds"),
    ],
)
def test_bad_parameters(gaussian_data, params, match):
    with pytest.raises(ValueError, match=match):
        fast(**params).fit(gaussian_data)


def test_diverging_configuration_is_reported(gaussian_data):
    est = fast(objective="ssm", learning_rate=1e6, max_grad_norm=None, max_iter=50, ema_decay=None)
    with pytest.raises(FloatingPointError, match="learning_rate"):
        est.fit(gaussian_data)


def test_sm_refuses_many_features():
    X = np.random.default_rng(0).normal(size=(20, 101))
    with pytest.raises(ValueError, match="ssm"):
        fast(objective="sm", architecture="fc").fit(X)


def test_sample_statistics_follow_a_gaussian_fit():
    rng = np.random.default_rng(1)
    cov = np.array([[2.0, 0.8], [0.8, 1.0]])
    X = rng.multivariate_normal([5.0, -2.0], cov, size=2000)
    est = fast(objective="ml", architecture="fc", n_blocks=1, max_iter=30).fit(X)
    samples = est.sample(20000, random_state=0)
    assert np.allclose(samples.mean(0), [5.0, -2.0], atol=0.1)
    assert np.allclose(np.cov(samples.T), cov, atol=0.15)


def test_logit_dequantized_integer_data():
    rng = np.random.default_rng(0)
    X = rng.binomial(16, [0.2, 0.5, 0.8], size=(400, 3)).astype(float)
    est = fast(preprocessing="logit", bounds=(0, 16), dequantize=True).fit(X)
    scores = est.score_samples(X)
    assert np.isfinite(scores).all()
    samples = est.sample(200, random_state=0)
    assert np.array_equal(samples, np.round(samples))
    assert samples.min() >= 0 and samples.max() <= 16
    assert np.all(est.score_samples(X + 20) == -np.inf)  # zero density outside the bounds
    with pytest.raises(ValueError, match="outside bounds"):
        est.score_gradient(X + 20)


def test_early_stopping_records_validation_and_keeps_the_best(gaussian_data):
    est = fast(max_iter=15, n_iter_no_change=3, early_stopping=True).fit(gaussian_data)
    assert len(est.validation_scores_) == est.n_iter_ == len(est.loss_curve_)
    assert est.best_iteration_ == 1 + int(np.argmax(est.validation_scores_))


def test_warm_start_continues_training(gaussian_data):
    est = fast(warm_start=True, max_iter=2, early_stopping=False).fit(gaussian_data)
    before = est.score_samples(gaussian_data)
    est.fit(gaussian_data)
    assert not np.allclose(est.score_samples(gaussian_data), before)
    cold = clone(est).set_params(warm_start=False).fit(gaussian_data)
    assert np.allclose(cold.score_samples(gaussian_data), before)


@pytest.mark.parametrize("objective", ["ml", "dsm"])
def test_warm_start_continues_optimizer_ema_and_schedule(gaussian_data, objective):
    """Two warm fits of 2 epochs are exactly one fit of 4: Adam's moments, the plateau
    schedule, the EMA and the random stream all continue (float64, so bit for bit)."""
    options = dict(
        objective=objective, early_stopping=False, training_dtype="float64", n_iter_no_change=50
    )
    warm = fast(warm_start=True, max_iter=2, **options).fit(gaussian_data)
    warm.fit(gaussian_data)
    long = fast(max_iter=4, **options).fit(gaussian_data)
    np.testing.assert_allclose(
        warm.score_samples(gaussian_data), long.score_samples(gaussian_data), rtol=0, atol=1e-12
    )
    steps = [int(state["step"]) for state in warm._run.trainer.optimizer.state.values()]
    assert set(steps) == {warm._run.trainer.n_steps} and warm._run.trainer.n_iter == 4
    assert warm._run.trainer.ema.n_updates == warm._run.trainer.n_steps
    # A fresh optimizer (what warm_start did before the trainer kept its state) differs.
    restart = fast(warm_start=True, max_iter=2, **options).fit(gaussian_data)
    restart._run = None
    restart.fit(gaussian_data)
    assert not np.allclose(restart.score_samples(gaussian_data), long.score_samples(gaussian_data))


def test_cold_fit_keeps_no_trainer(gaussian_data):
    est = fast(max_iter=1).fit(gaussian_data)
    assert est._run is None


def test_one_feature(gaussian_data):
    est = fast().fit(gaussian_data[:, :1])
    assert est.architecture_ == "spline" and np.isfinite(est.score(gaussian_data[:, :1]))


def test_verbose_prints_epochs(gaussian_data, capsys):
    fast(verbose=2, max_iter=2).fit(gaussian_data)
    assert "epoch 2" in capsys.readouterr().out


def test_convergence_warning(gaussian_data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast(max_iter=1).fit(gaussian_data)
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_matches_cpu_closely(gaussian_data):
    gpu = fast(device="cuda", training_dtype="float64").fit(gaussian_data)
    assert gpu.device_.type == "cuda" and np.isfinite(gpu.score_samples(gaussian_data)).all()
    restored = pickle.loads(pickle.dumps(gpu))
    assert np.allclose(restored.score_samples(gaussian_data), gpu.score_samples(gaussian_data))


def test_fit_restores_the_torch_thread_setting(gaussian_data):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast(max_iter=1).fit(gaussian_data)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("objective", ["ml", "sml", "sm", "ssm", "dsm", "fdssm"])
@pytest.mark.parametrize("architecture", ["fc", "coupling", "spline", "autoregressive"])
def test_every_objective_trains_every_architecture_in_float32(
    gaussian_data, objective, architecture
):
    est = fast(objective=objective, architecture=architecture, n_blocks=2, max_iter=2).fit(
        gaussian_data
    )
    assert est.n_skipped_steps_ == 0 and np.isfinite(est.score(gaussian_data))


def test_auto_learning_rate_depends_on_the_architecture(gaussian_data):
    assert fast(architecture="fc", max_iter=1).fit(gaussian_data).learning_rate_ == 1e-3
    assert fast(architecture="spline", max_iter=1).fit(gaussian_data).learning_rate_ == 3e-3
    assert fast(learning_rate=0.01, max_iter=1).fit(gaussian_data).learning_rate_ == 0.01


def test_constant_schedule_keeps_the_learning_rate(gaussian_data):
    est = fast(lr_schedule="constant", learning_rate=0.01, max_iter=3).fit(gaussian_data)
    assert est.final_learning_rate_ == 0.01


def test_a_failed_refit_leaves_the_previous_model_whole():
    """A refit on data of another width that fails after validation (here: an image shape
    that does not fit) used to leave n_features_in_ of the new data beside the old flow, so
    that the old data was refused and the new one met a torch error."""
    X = np.random.default_rng(0).normal(size=(100, 3))
    est = fit_quietly(tiny(random_state=0), X)
    before = est.score_samples(X)
    est.set_params(architecture="conv", image_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="holds 9 values per image"):
        est.fit(np.random.default_rng(1).normal(size=(100, 5)))
    assert est.n_features_in_ == 3
    np.testing.assert_array_equal(est.score_samples(X), before)
    with pytest.raises(ValueError, match="X has 5 features, but EBFlowDensity is expecting 3"):
        est.score_samples(np.zeros((2, 5)))


def test_a_failed_first_fit_leaves_the_estimator_unfitted():
    est = tiny(architecture="conv", image_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="holds 9 values per image"):
        est.fit(np.random.default_rng(1).normal(size=(100, 5)))
    assert not hasattr(est, "n_features_in_")
    with pytest.raises(NotFittedError):
        est.score_samples(np.zeros((2, 5)))


def test_the_meta_device_is_refused_with_a_clear_message():
    """device='meta' ended in torch's "Cannot copy out of meta tensor"."""
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="device='meta' holds no data"):
        tiny(device="meta").fit(X)


def test_a_validation_fraction_that_leaves_no_training_rows_is_named():
    """validation_fraction=0.999 was blamed on the number of samples."""
    X = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.warns(UserWarning, match="validation_fraction=0.999 of 100 samples leaves 1"):
        fit_quietly(tiny(validation_fraction=0.999), X)


def test_a_flow_too_large_for_memory_is_refused_before_allocating():
    """200,000 columns tried to allocate 160 GB for the FC flow's weights; now the flow is
    sized on the meta device and refused with the sizes and the remedy."""
    X = np.random.default_rng(0).normal(size=(3, 200_000))
    with pytest.raises(ValueError, match=r"160,000,600,001 weights: training them needs about"):
        fit_quietly(EBFlowDensity(max_iter=1), X)


def test_one_dimensional_data_can_be_multimodal():
    """With one feature the spline flow had no flexible layer (its couplings were replaced
    by smooth leaky ReLUs): two bumps scored -2.40 against a 2-component GMM's -1.38 and 22 %
    of the samples fell in the empty gap. It now stacks unconditional splines."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)

    def bumps(n: int) -> np.ndarray:
        left = rng.uniform(size=n) < 0.5
        return np.where(left, rng.normal(-3, 0.5, n), rng.normal(3, 0.5, n))[:, None]

    X, test = bumps(2000), bumps(5000)
    est = fit_quietly(EBFlowDensity(random_state=0), X)
    gmm = GaussianMixture(2, random_state=0).fit(X)
    assert est.score(test) > gmm.score(test) - 0.05
    assert np.mean(np.abs(est.sample(5000, random_state=0)) < 1.5) < 0.03
