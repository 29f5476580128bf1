"""EBFlowDensity with the image flows: ``architecture="conv"`` and ``"glow"``, ``image_shape``.

Rows of ``X`` are images flattened in C·H·W order; a first ``Reshape`` layer lets the flow,
the preprocessing and the objectives work on flat rows. scikit-learn's checks feed data of
1 to 10 features, so they run with a shape that one ``-1`` entry fits to every width:
``(1, 1, -1)`` (the CNN convolves along the row) and ``(-1, 1, 1)`` (a Glow without a
squeeze, which needs 2 channels: 1 feature is refused with the message the check expects).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

import skebflow
from skebflow import EBFlowDensity
from skebflow.nn._conv import Conv1x1, Conv2d
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._image_rows import build_conv_rows, build_glow_rows
from skebflow.nn._shapes import Reshape
from skebflow.objectives import _score_matching as score_matching
from skebflow.objectives._jets import energy_jet, energy_score_curvature, supports_jet
from skebflow.objectives._regularizers import SingularValueBarrier
from tests.helpers import failing_on, ignore_convergence, perturb_, tiny

pytestmark = ignore_convergence

#: This module's estimator: tiny, in batches of 32, with the image flows' default blocks.
fast = functools.partial(tiny, n_blocks=None, batch_size=32)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """Integer 'images' of shape (1, 4, 4) with values 0..16, flattened: smooth blobs."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1)
    centres = rng.uniform(0, 3, size=(160, 1, 1, 2))
    blobs = np.exp(-((grid[None] - centres) ** 2).sum(-1) / 2.0)
    return np.clip(np.round(16 * blobs + rng.integers(0, 3, blobs.shape)), 0, 16).reshape(160, 16)


PIXELS = {"preprocessing": "logit", "bounds": (0, 17), "dequantize": True}


@parametrize_with_checks(
    [
        fast(architecture="conv", image_shape=(1, 1, -1)),
        fast(architecture="glow", image_shape=(-1, 1, 1)),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("architecture", ["conv", "glow"])
def test_fit_score_sample_on_pixel_rows(pixels, architecture):
    est = fast(architecture=architecture, image_shape=(1, 4, 4), max_iter=3, **PIXELS).fit(pixels)
    assert est.architecture_ == architecture and est.image_shape_ == (1, 4, 4)
    assert est.objective_ == "ml" and est.min_singular_value_ is None
    assert isinstance(est.flow_.layers[0], Reshape) and est.flow_.event_shape == (16,)
    scores = est.score_samples(pixels[:5])
    assert scores.shape == (5,) and np.isfinite(scores).all()
    assert est.score_gradient(pixels[:3]).shape == (3, 16)
    samples = est.sample(7, random_state=0)
    assert samples.shape == (7, 16) and np.isfinite(samples).all()
    assert samples.min() >= 0 and samples.max() <= 17


def test_minus_one_is_inferred_and_bad_shapes_are_named(pixels):
    est = fast(architecture="conv", image_shape=(1, -1, 4), max_iter=1).fit(pixels)
    assert est.image_shape_ == (1, 4, 4)
    with pytest.raises(ValueError, match=r"holds 12 values per image, but X has 16 features"):
        fast(architecture="conv", image_shape=(1, 3, 4)).fit(pixels)
    with pytest.raises(ValueError, match="divisible by 3"):
        fast(architecture="conv", image_shape=(3, -1, 1)).fit(pixels)
    with pytest.raises(ValueError, match="at most one of them -1"):
        fast(architecture="conv", image_shape=(-1, -1, 4)).fit(pixels)
    with pytest.raises(ValueError, match="three positive integers"):
        fast(architecture="conv", image_shape=(4, 4)).fit(pixels)
    with pytest.raises(ValueError, match="pass image_shape"):
        fast(architecture="glow").fit(pixels)


def test_too_many_blocks_for_the_image_is_a_value_error():
    with pytest.raises(ValueError, match="divisible by 4"):
        fast(architecture="conv", image_shape=(1, 2, 8), n_blocks=3).fit(np.ones((10, 16)))


def test_the_barrier_watches_the_convolutions(pixels):
    est = fast(architecture="conv", image_shape=(1, 4, 4), objective="dsm", max_iter=1, **PIXELS)
    assert est.fit(pixels).min_singular_value_ == 0.2
    assert np.isfinite(est.score(pixels))


@pytest.mark.parametrize("layer", ["conv", "1x1"])
def test_barrier_penalty_is_the_smallest_singular_value_of_the_operator(layer):
    torch.manual_seed(0)
    if layer == "conv":
        module = Conv2d(2, (3, 3), kernel_size=3).double()
        with torch.no_grad():
            module.weight.mul_(0.05)  # every singular value of A near 0.05
        matrix = module.operator()
    else:
        module = Conv1x1(2, (3, 3), init="identity").double()
        with torch.no_grad():
            module.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.05]], dtype=torch.float64))
        matrix = module.weight
    flow = EnergyFlow([module], event_shape=(2, 3, 3))
    barrier = SingularValueBarrier(0.2, refresh=1, n_tracked=matrix.shape[0])
    penalty = barrier(flow)
    sigma = torch.linalg.svdvals(matrix.detach())
    expected = torch.relu(1 - sigma / 0.2).pow(2).sum()
    torch.testing.assert_close(penalty, expected)
    penalty.backward()  # pushes the small singular values up through the kernel
    assert module.weight.grad is not None and float(module.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("objective", ["ssm", "dsm", "fdssm"])
def test_score_objectives_train_the_image_flows(pixels, objective):
    for architecture in ("conv", "glow"):
        est = fast(architecture=architecture, image_shape=(1, 4, 4), objective=objective, **PIXELS)
        est.fit(pixels)
        assert est.n_skipped_steps_ == 0 and np.isfinite(est.score(pixels))


def _row_flows() -> dict[str, torch.nn.Module]:
    generator = torch.Generator().manual_seed(0)
    conv = build_conv_rows(16, image_shape=(1, 4, 4), n_blocks=2, kernel_size=3).double()
    glow = build_glow_rows(
        16, image_shape=(1, 4, 4), n_blocks=2, steps_per_level=1, hidden_features=4
    ).double()
    flows = {"conv": conv, "glow": glow}
    for flow in flows.values():
        perturb_(flow, generator, 0.2)
    return flows


@pytest.mark.parametrize("name", ["conv", "glow"])
def test_fast_score_paths_through_the_reshape_match_autograd(monkeypatch, name):
    flow = _row_flows()[name]
    y = torch.randn(3, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    if supports_jet(flow):
        energy, first, second = energy_jet(flow, y, v)
        _, score, second_2 = energy_score_curvature(flow, y, v)
        torch.testing.assert_close(energy, flow.energy(y))
        for i in range(len(y)):
            point = y[i]
            grad = torch.autograd.functional.jacobian(lambda t: flow.energy(t[None]).sum(), point)
            hess = torch.autograd.functional.hessian(lambda t: flow.energy(t[None]).sum(), point)
            torch.testing.assert_close(score[i], grad)
            for s in range(len(v)):
                torch.testing.assert_close(first[s, i], v[s, i] @ grad)
                torch.testing.assert_close(second[s, i], v[s, i] @ hess @ v[s, i])
                torch.testing.assert_close(second_2[s, i], v[s, i] @ hess @ v[s, i])

    def loss(objective: str) -> torch.Tensor:
        flow.zero_grad()
        value = score_matching.ssm(flow, y, generator=torch.Generator().manual_seed(3))
        value.backward()
        return value.detach()

    fast_loss = loss("ssm")
    fast_grads = [p.grad.clone() for p in flow.parameters()]
    monkeypatch.setattr(score_matching, "supports_jet", lambda model: False)
    torch.testing.assert_close(loss("ssm"), fast_loss)
    for p, grad in zip(flow.parameters(), fast_grads, strict=True):
        torch.testing.assert_close(p.grad, grad)


@pytest.mark.parametrize("name", ["conv", "glow"])
def test_rows_flows_invert_and_sample_flat(name):
    flow = _row_flows()[name]
    y = torch.randn(4, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    z, _ = flow.transform(y)
    torch.testing.assert_close(flow.inverse(z), y)
    assert flow.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 16)
    # The row is the image flattened in C·H·W order.
    image = Reshape((1, 4, 4)).map(y)
    torch.testing.assert_close(image[:, 0, 1, 2], y[:, 6])


@pytest.mark.parametrize("architecture", ["conv", "glow"])
def test_save_and_load_round_trip(tmp_path, pixels, architecture):
    est = fast(architecture=architecture, image_shape=(1, -1, 4), max_iter=1, **PIXELS)
    est.fit(pixels)
    path = os.path.join(tmp_path, "model.skebflow")
    est.save(path)
    with failing_on(Warning):
        loaded = skebflow.load(path)
    assert loaded.image_shape == (1, -1, 4) and loaded.image_shape_ == (1, 4, 4)
    np.testing.assert_array_equal(loaded.score_samples(pixels), est.score_samples(pixels))
    np.testing.assert_array_equal(loaded.sample(5, random_state=1), est.sample(5, random_state=1))


@pytest.mark.slow
def test_conv_learns_digits_with_the_pixel_chain():
    from sklearn.datasets import load_digits

    X = load_digits().data
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    train, test = X[order[:1400]], X[order[1400:]]
    est = EBFlowDensity(
        architecture="conv", image_shape=(1, 8, 8), max_iter=15, random_state=0, **PIXELS
    ).fit(train)
    assert est.objective_ == "ml"
    assert est.score(test) > est.validation_scores_[0] + 20
