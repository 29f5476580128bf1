"""The singular-value barrier: exact where it should be, cheap and honest elsewhere."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import skebflow.estimators._defaults as defaults_module
from skebflow import EBFlowDensity
from skebflow.estimators import AUTO_MIN_SINGULAR_VALUE
from skebflow.nn._architectures import build_fc
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._linear import Dense
from skebflow.objectives._registry import SCORE_OBJECTIVES, bind_objective, make_regularizers
from skebflow.objectives._regularizers import SingularValueBarrier
from skebflow.training._trainer import make_optimizer, train_step
from tests.helpers import fit_quietly


def _matrix(singular_values: list[float], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    d = len(singular_values)
    q1 = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))[0]
    q2 = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))[0]
    return q1 @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ q2.T


def _flow(*weights: torch.Tensor) -> EnergyFlow:
    layers = [Dense(w.shape[0]).double() for w in weights]
    with torch.no_grad():
        for layer, w in zip(layers, weights, strict=True):
            layer.weight.copy_(w)
    return EnergyFlow(layers, weights[0].shape[0])


def _exact(flow: EnergyFlow, threshold: float) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for layer in flow.layers:
        values = torch.linalg.svdvals(layer.weight)
        total = total + torch.relu(1.0 - values / threshold).pow(2).sum()
    return total


def test_exact_value_and_gradient_when_every_pair_is_tracked():
    flow = _flow(_matrix([2.0, 1.0, 0.15, 0.05]), _matrix([1.0, 0.5, 0.3, 0.01], seed=1))
    barrier = SingularValueBarrier(0.2, strength=3.0, refresh=1, n_tracked=4)
    value = barrier(flow)
    (grad,) = torch.autograd.grad(value, flow.layers[0].weight)
    expected = 3.0 * _exact(flow, 0.2)
    (expected_grad,) = torch.autograd.grad(expected, flow.layers[0].weight)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_inverse_iteration_finds_the_smallest_pairs_of_a_large_layer():
    values = [1.0 + 0.02 * i for i in range(37)] + [0.3, 0.08, 0.01]
    flow = _flow(_matrix(values, seed=2))
    barrier = SingularValueBarrier(0.1, refresh=1, n_tracked=4)
    torch.testing.assert_close(barrier(flow), _exact(flow, 0.1), rtol=1e-8, atol=1e-10)


def test_between_searches_the_tracked_pairs_follow_the_weights():
    flow = _flow(_matrix([1.0, 0.9, 0.12, 0.05], seed=3))
    barrier = SingularValueBarrier(0.2, refresh=10, n_tracked=4)
    barrier(flow)  # searches
    with torch.no_grad():
        flow.layers[0].weight.mul_(0.5)  # same singular vectors, halved values
    torch.testing.assert_close(barrier(flow), _exact(flow, 0.2))
    assert barrier.n_calls == 2


def test_well_conditioned_layers_cost_nothing():
    flow = build_fc(5, n_blocks=2).double()  # identity weights
    value = SingularValueBarrier(0.2)(flow)
    assert value.item() == 0.0 and value.dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0.0}, {"threshold": 0.1, "strength": -1.0}, {"threshold": 0.1, "refresh": 0}],
)
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        SingularValueBarrier(**kwargs)


def test_regularizers_add_the_barrier_to_score_matching_only():
    flow = _flow(_matrix([1.0, 0.5, 0.02]))
    y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("ssm", "dsm", "fdssm", "ml"):
        plain = bind_objective(name)(flow, y, torch.Generator().manual_seed(1))
        penalty = sum(r(flow) for r in make_regularizers(name, 0.1))
        expected = 0.0 if name == "ml" else _exact(flow, 0.1).item()
        assert float(penalty) == pytest.approx(expected, rel=1e-6, abs=1e-12)
        assert torch.isfinite(plain)
    assert make_regularizers("ssm", None) == []


def test_train_step_adds_the_regularizers_to_the_loss():
    flow = _flow(_matrix([1.0, 0.5, 0.02]))
    y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = list(flow.parameters())
    losses = []
    for regularizers in ([], make_regularizers("ssm", 0.1)):
        copy_of = copy.deepcopy(flow)
        params = list(copy_of.parameters())
        loss = train_step(
            copy_of,
            bind_objective("ssm"),
            y,
            optimizer=make_optimizer(params, 1e-3),
            parameters=params,
            generator=torch.Generator().manual_seed(1),
            regularizers=regularizers,
        )
        losses.append(float(loss))
    assert losses[1] - losses[0] == pytest.approx(_exact(flow, 0.1).item(), rel=1e-6)


def test_estimator_trains_with_the_barrier():
    X = np.random.default_rng(0).normal(size=(200, 3)) @ np.array(
        [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]
    )
    params = {"objective": "ssm", "architecture": "fc", "max_iter": 3, "random_state": 0}
    barred = EBFlowDensity(min_singular_value=1.5, **params).fit(X)  # active from step 0
    plain = EBFlowDensity(min_singular_value=None, **params).fit(X)
    assert np.all(np.isfinite(barred.score_samples(X)))
    assert not np.allclose(barred.loss_curve_, plain.loss_curve_)
    with pytest.raises(ValueError, match="min_singular_value"):
        EBFlowDensity(min_singular_value=-1.0).fit(X)


@pytest.mark.parametrize(
    ("objective", "preprocessing", "expected"),
    [
        ("ssm", "standardize", AUTO_MIN_SINGULAR_VALUE),
        ("dsm", "standardize", AUTO_MIN_SINGULAR_VALUE),
        ("fdssm", "standardize", AUTO_MIN_SINGULAR_VALUE),
        ("ml", "standardize", None),
        ("sml", "standardize", None),
        ("ssm", None, None),
    ],
)
def test_auto_barrier_is_on_for_score_matching_on_preprocessed_data(
    objective, preprocessing, expected
):
    X = np.random.default_rng(1).normal(size=(60, 2))
    est = EBFlowDensity(
        objective=objective, preprocessing=preprocessing, max_iter=1, random_state=0
    ).fit(X)
    assert est.min_singular_value_ == expected
    explicit = EBFlowDensity(objective=objective, min_singular_value=0.3, max_iter=1).fit(X)
    # The barrier never acts on a likelihood objective, so none is reported for one.
    assert explicit.min_singular_value_ == (0.3 if objective in SCORE_OBJECTIVES else None)


def test_auto_barrier_reaches_the_training_loss(monkeypatch):
    # A threshold above the initial singular values makes the barrier active at once.
    monkeypatch.setattr(defaults_module, "AUTO_MIN_SINGULAR_VALUE", 1.5)
    X = np.random.default_rng(2).normal(size=(120, 3))
    params = {"objective": "ssm", "architecture": "fc", "max_iter": 2, "random_state": 0}
    auto = EBFlowDensity(**params).fit(X)
    explicit = EBFlowDensity(min_singular_value=1.5, **params).fit(X)
    plain = EBFlowDensity(min_singular_value=None, **params).fit(X)
    np.testing.assert_allclose(auto.loss_curve_, explicit.loss_curve_)
    assert not np.allclose(auto.loss_curve_, plain.loss_curve_)


def test_a_well_conditioned_flow_is_searched_at_doubling_intervals():
    flow = build_fc(6, n_blocks=2).double()  # identity weights, far from the threshold
    barrier = SingularValueBarrier(0.2, refresh=50, max_refresh=400, n_tracked=2)
    searched = []
    for call in range(2000):
        before = barrier.n_searches
        barrier(flow)
        if barrier.n_searches > before:
            searched.append(call)
    assert searched == [0, 50, 150, 350, 750, 1150, 1550, 1950]
    assert barrier.searches_per_call(2000) == pytest.approx(len(searched) / 2000)


def test_a_layer_near_the_threshold_is_searched_every_refresh_calls():
    flow = _flow(_matrix([1.0, 1.0, 0.9, 0.5, 0.7, 1.2], seed=4))  # 0.5 < far * 0.2
    barrier = SingularValueBarrier(0.2, refresh=50, n_tracked=2)
    for _ in range(400):
        barrier(flow)
    assert barrier.n_searches == 8 and barrier.interval == 50
    assert barrier.searches_per_call(1000) == pytest.approx(0.02)


def test_a_falling_singular_value_is_caught_before_it_crosses_the_threshold():
    # The smallest singular value stays at 1 for 400 calls, then falls linearly to 0 at
    # call 1,000: the interval grows while it is far (a search at call 750 would
    # otherwise schedule the next one after call 1,000), shrinks once the fall is seen,
    # and the pair is tracked (and penalized exactly) before it reaches the threshold.
    q = _matrix([1.0] * 6, seed=5)
    barrier = SingularValueBarrier(0.1, refresh=25, max_refresh=800, n_tracked=2)
    flow = _flow(q)
    for call in range(1000):
        smallest = min(1.0, (1000 - call) / 600)
        with torch.no_grad():
            flow.layers[0].weight.copy_(
                q @ torch.diag(torch.tensor([1.0, 1.1, 1.2, 1.3, 1.4, smallest], dtype=q.dtype))
            )
        value = float(barrier(flow))
        if smallest < 0.1:
            assert value == pytest.approx((1.0 - smallest / 0.1) ** 2, rel=1e-6)
    assert barrier.n_searches < 1000 / 25  # fewer searches than a fixed interval


def test_the_search_after_validation_reuses_the_validations_factorization(monkeypatch):
    flow = _flow(_matrix([1.0, 0.9, 0.3, 0.12, 0.05, 1.1], seed=6))
    kept = copy.deepcopy(flow).requires_grad_(False)  # as the EMA copy is
    with torch.no_grad():
        log_z = kept.log_normalizer()  # the validation's log-normalizer factorizes
    expected = -torch.linalg.slogdet(flow.layers[0].weight.detach())[1]
    torch.testing.assert_close(log_z, expected)
    fresh = SingularValueBarrier(0.2, n_tracked=3)
    fresh.search(flow)

    def no_factorization(*args, **kwargs):
        raise AssertionError("the barrier factorized again")

    monkeypatch.setattr(torch.linalg, "lu_factor_ex", no_factorization)
    reused = SingularValueBarrier(0.2, n_tracked=3)
    reused.after_validation(kept)
    assert reused.n_searches == 1
    torch.testing.assert_close(reused(flow), fresh(flow))


def test_dense_factors_are_cached_per_weight_version_and_only_for_frozen_weights():
    layer = Dense(4).double()
    assert layer.cached_factors() is None
    layer.factors()
    assert layer.cached_factors() is None  # trainable: never cached
    layer.requires_grad_(False)
    first = layer.factors()
    assert layer.cached_factors()[0] is first[0]
    with torch.no_grad():
        layer.weight.mul_(2.0)  # a new version of the weight
    assert layer.cached_factors() is None
    torch.testing.assert_close(
        layer.logabsdet(), torch.tensor(4 * math.log(2.0), dtype=torch.float64)
    )
    assert copy.deepcopy(layer).cached_factors() is None  # copies leave the factors behind


def test_a_default_fit_adds_no_factorization_for_the_barrier_after_its_first_search(monkeypatch):
    counts = {"n": 0}
    factor = torch.linalg.lu_factor_ex

    def counting(*args, **kwargs):
        counts["n"] += 1
        return factor(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "lu_factor_ex", counting)
    X = np.random.default_rng(3).normal(size=(400, 6))
    params = {"objective": "ssm", "architecture": "fc", "max_iter": 8, "random_state": 0}
    used = {}
    for threshold in (None, 0.2):
        counts["n"] = 0
        fit_quietly(EBFlowDensity(min_singular_value=threshold, **params), X)
        used[threshold] = counts["n"]
    assert used[0.2] - used[None] == 2  # the first search, before any validation: 2 layers
