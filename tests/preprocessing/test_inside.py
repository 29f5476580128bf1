"""The preprocessing inside the flow (MaP ablation): same density, objective in x-space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skebflow import EBFlowDensity
from skebflow.objectives._score_matching import sm
from skebflow.preprocessing._inside import (
    PreprocessingLayer,
    with_preprocessing,
    without_preprocessing,
)
from skebflow.preprocessing._transforms import make_preprocessing
from tests.helpers import fit_quietly, random_flow


@pytest.fixture
def bounded() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 0.05 + 0.9 * torch.rand(50, 3, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("name", ["standardize", "logit"])
def test_inside_flow_has_the_data_space_density(bounded, name):
    chain = make_preprocessing(name, bounds=(0.0, 1.0) if name == "logit" else None).fit(bounded)
    flow = random_flow("fc", 3, seed=1)
    inside = with_preprocessing(flow, chain)
    y, ladj = chain(bounded)
    # Energy and density are those of the composition; log Z is the flow's, unchanged.
    assert torch.allclose(inside.energy(bounded), flow.energy(y) - ladj)
    assert torch.allclose(inside.log_normalizer(), flow.log_normalizer())
    assert torch.allclose(inside.log_prob(bounded), flow.log_prob(y) + ladj)
    assert torch.allclose(inside.inverse(inside.transform(bounded)[0]), bounded)
    assert not list(inside.layers[0].parameters())


def test_inside_score_is_the_chain_rule_of_the_y_space_score(bounded):
    chain = make_preprocessing("logit", bounds=(0.0, 1.0)).fit(bounded)
    flow = random_flow("fc", 3, seed=2)
    x = bounded.clone().requires_grad_(True)
    (score_x,) = torch.autograd.grad(with_preprocessing(flow, chain).energy(x).sum(), x)
    y = chain(bounded)[0].requires_grad_(True)
    (score_y,) = torch.autograd.grad(flow.energy(y).sum(), y)
    # Logit is elementwise: dE_X/dx = dE_Y/dy * dy/dx - d log|dy/dx| / dx.
    u = (bounded - 0.0) / 1.0
    lam = chain.transforms[0].eps
    v = lam + (1 - 2 * lam) * u
    dydx = (1 - 2 * lam) / (v * (1 - v))
    dlog = (1 - 2 * lam) * (2 * v - 1) / (v * (1 - v))
    assert torch.allclose(score_x, score_y * dydx - dlog)
    # ... so the Fisher divergence, hence what score matching learns, differs.
    assert not torch.isclose(sm(with_preprocessing(flow, chain), bounded), sm(flow, y.detach()))


def test_without_preprocessing_round_trip_and_refusal():
    chain = make_preprocessing("standardize").fit(torch.randn(5, 2, dtype=torch.float64))
    flow = random_flow("fc", 2)
    inside = with_preprocessing(flow, chain)
    assert isinstance(inside.layers[0], PreprocessingLayer)
    assert list(without_preprocessing(inside).layers) == list(flow.layers)
    with pytest.raises(ValueError, match="PreprocessingLayer"):
        without_preprocessing(flow)


def _fit(X: np.ndarray, objective: str, mapped: bool, **params: object) -> EBFlowDensity:
    model = EBFlowDensity(
        objective=objective,
        architecture="fc",
        match_after_preprocessing=mapped,
        training_dtype="float64",
        max_iter=3,
        random_state=0,
        **params,
    )
    return fit_quietly(model, X)


def test_ml_is_invariant_to_where_the_preprocessing_sits():
    X = np.random.default_rng(0).uniform(0.1, 0.9, size=(120, 3))
    a = _fit(X, "ml", True, preprocessing="logit", bounds=(0, 1))
    b = _fit(X, "ml", False, preprocessing="logit", bounds=(0, 1))
    # The log-Jacobian of T does not depend on the parameters: same gradients, same fit.
    np.testing.assert_allclose(a.score_samples(X), b.score_samples(X), rtol=1e-9, atol=1e-9)
    assert np.allclose(a.validation_scores_, b.validation_scores_)


def test_score_matching_without_map_learns_another_model_of_the_same_form():
    X = np.random.default_rng(1).integers(0, 17, size=(150, 4)).astype(float)
    params = {"preprocessing": "logit", "bounds": (0, 16), "dequantize": True}
    a = _fit(X, "ssm", True, whiten=False, **params)  # the same form: no whitening in front
    b = _fit(X, "ssm", False, **params)
    assert [type(layer) for layer in a.flow_.layers] == [type(layer) for layer in b.flow_.layers]
    assert not any(isinstance(layer, PreprocessingLayer) for layer in b.flow_.layers)
    assert not np.allclose(a.score_samples(X), b.score_samples(X))
    # Still a normalized density on the data cells: sampling and scoring work.
    assert np.all(np.isfinite(b.score_samples(X)))
    assert b.sample(5, random_state=0).shape == (5, 4)
