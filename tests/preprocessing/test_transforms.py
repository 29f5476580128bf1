"""MaP preprocessing: inverses, log-Jacobians, normalization, bounds, dequantization."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skebflow.preprocessing._transforms import (
    Chain,
    Dequantize,
    Logit,
    Standardize,
    Transform,
    make_preprocessing,
)

D = 3


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def continuous(n: int = 50, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, D, generator=gen(seed), dtype=torch.float64)
    return 3.0 * x + torch.tensor([1.0, -2.0, 10.0], dtype=torch.float64)


def boxed(n: int = 50, seed: int = 0) -> torch.Tensor:
    # strictly inside (0, 16), away from the edges
    return 1.0 + 14.0 * torch.rand(n, D, generator=gen(seed), dtype=torch.float64)


def integers(n: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 17, (n, D), generator=gen(seed)).to(torch.float64)


# name -> (unfitted transform factory, data the transform is fitted and tested on)
CASES = {
    "standardize": (Standardize, continuous),
    "logit-known": (lambda: Logit((0.0, 16.0)), boxed),
    "logit-per-feature": (lambda: Logit(([0.0, -1.0, 0.5], [16.0, 17.0, 20.0])), boxed),
    "logit-inferred": (Logit, boxed),
    "dequantize": (Dequantize, integers),
    "chain-empty": (Chain, continuous),
    "chain-standardize-logit": (lambda: Chain(Standardize(), Logit((-10.0, 10.0))), boxed),
    "chain-dequantize-standardize": (
        lambda: make_preprocessing("standardize", dequantize=True),
        integers,
    ),
    "chain-dequantize-logit": (
        lambda: make_preprocessing("logit", bounds=(0, 16), dequantize=True),
        integers,
    ),
    "chain-dequantize-logit-inferred": (
        lambda: make_preprocessing("logit", dequantize=True),
        integers,
    ),
}


def fitted(name: str) -> tuple[Transform, torch.Tensor]:
    factory, data = CASES[name]
    x = data()
    return factory().fit(x), x


@pytest.mark.parametrize("name", CASES)
def test_inverse_of_forward(name):
    t, x = fitted(name)
    y, ladj = t(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    assert ladj.shape == (x.shape[0],)
    torch.testing.assert_close(t.inverse(y), x, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", CASES)
def test_ladj_matches_autograd_jacobian(name):
    t, x = fitted(name)
    _, ladj = t(x[:4])
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: t(v[None])[0][0], x[i])
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac)[1], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", CASES)
def test_forward_is_differentiable_in_x(name):
    t, x = fitted(name)
    x = x.clone().requires_grad_(True)
    y, ladj = t(x)
    (grad,) = torch.autograd.grad((y**2).sum() + ladj.sum(), x)
    assert torch.isfinite(grad).all()


def std_normal_log_prob(y: torch.Tensor) -> torch.Tensor:
    return (-0.5 * y**2 - 0.5 * math.log(2 * math.pi)).sum(dim=1)


def test_change_of_variables_standardize_integrates_to_one():
    x_train = 2.0 + 0.5 * torch.randn(200, 1, generator=gen(3), dtype=torch.float64)
    t = Standardize().fit(x_train)
    grid = torch.linspace(-10.0, 14.0, 20001, dtype=torch.float64)[:, None]
    y, ladj = t(grid)
    density = torch.exp(std_normal_log_prob(y) + ladj)
    assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("eps", [1e-6, 0.1])
def test_change_of_variables_logit_integrates_on_the_box(eps):
    low, high = -1.0, 3.0
    t = Logit((low, high), eps=eps).fit(torch.tensor([[0.0]], dtype=torch.float64))
    grid = torch.linspace(low, high, 200001, dtype=torch.float64)[:, None]
    y, ladj = t(grid)
    density = torch.exp(std_normal_log_prob(y) + ladj)
    # the squeezed box maps onto [logit(eps), logit(1 - eps)] in y-space
    edge = torch.tensor(math.log((1 - eps) / eps), dtype=torch.float64)
    expected = (torch.special.ndtr(edge) - torch.special.ndtr(-edge)).item()
    assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(expected, abs=1e-6)


def test_standardize_constant_columns_get_scale_one():
    x = continuous()
    x[:, 1] = 0.1
    t = Standardize().fit(x)
    assert t.scale[1].item() == 1.0
    y, ladj = t(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    assert torch.all(y[:, 1] == 0.0)


@pytest.mark.parametrize(("a", "b"), [(2.0, 0.0), (0.1, 5.0), (7.5, -3.0)])
def test_standardize_equivariance(a, b):
    x = continuous()
    y, ladj = Standardize().fit(x)(x)
    y_ab, ladj_ab = Standardize().fit(a * x + b)(a * x + b)
    torch.testing.assert_close(y_ab, y)
    torch.testing.assert_close(ladj_ab, ladj - D * math.log(a))


def test_standardize_uses_float64_statistics_and_requires_fit():
    t = Standardize().fit(continuous().float())
    assert t.mean.dtype == torch.float64 and t.scale.dtype == torch.float64
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardize()(continuous())


@pytest.mark.parametrize("cls", [Standardize, Logit, Dequantize])
def test_non_finite_training_data_raises(cls):
    x = integers()
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        cls().fit(x)


def test_logit_check_bounds_message():
    t = Logit((0, 16)).fit(boxed())
    x = boxed()
    x[0, 0], x[1, 2], x[2, 1] = -1.0, 17.0, 16.5
    with pytest.raises(ValueError, match=r"X has 3 value\(s\) outside bounds=\(0, 16\)"):
        t.check_bounds(x)
    t.check_bounds(torch.tensor([[0.0, 16.0, 8.0]]))  # the closed box is fine
    with pytest.raises(ValueError, match="outside"):
        Logit((0, 16)).fit(x)


def test_logit_inferred_bounds_contain_training_data():
    x = boxed()
    x[:, 2] = 4.0  # a constant feature
    t = Logit(margin=0.05).fit(x)
    lo, hi = x.amin(0), x.amax(0)
    assert torch.all(t.low < lo) and torch.all(t.high > hi)
    torch.testing.assert_close(t.low[:2], lo[:2] - 0.05 * (hi - lo)[:2])
    torch.testing.assert_close(t.high[2], torch.tensor(4.0 + 0.05 * 4.0, dtype=torch.float64))
    t.check_bounds(x)
    assert torch.isfinite(t(x)[0]).all()
    with pytest.raises(RuntimeError, match="not fitted"):
        Logit()(x)


@pytest.mark.parametrize("kwargs", [{"eps": 0.5}, {"eps": -1.0}, {"margin": 0.0}])
def test_logit_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        Logit(**kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_logit_inverse_projects_far_samples_into_the_half_open_box(dtype):
    t = Logit((100.0, 117.0)).to(dtype)
    x = t.inverse(torch.tensor([[-50.0, 50.0, 0.0, float("nan")]], dtype=dtype))
    assert x[0, 0].item() == 100.0 and 116.99 < x[0, 1].item() < 117.0
    assert torch.isnan(x[0, 3])  # NaN is propagated, never masked
    chain = make_preprocessing("logit", bounds=(0, 16), dequantize=True).to(dtype)
    samples = chain.inverse(torch.tensor([[-50.0, 50.0, 13.9, -13.9]], dtype=dtype))
    assert samples.tolist() == [[0.0, 16.0, 16.0, 0.0]]


def test_dequantize_augment_uses_the_generator():
    t = Dequantize().fit(integers())
    x = integers()
    a, b = t.augment(x, gen(7)), t.augment(x, gen(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, t.augment(x, gen(8)))
    assert torch.all(a >= x) and torch.all(a < x + 1)
    torch.testing.assert_close(t.inverse(a), x, rtol=0, atol=0)


def test_dequantize_forward_is_the_cell_centre_and_deterministic():
    t = Dequantize().fit(integers())
    x = integers()
    y1, ladj = t(x)
    torch.testing.assert_close(y1, x + 0.5)
    torch.testing.assert_close(t(x)[0], y1, rtol=0, atol=0)
    assert torch.all(ladj == 0)


def test_dequantize_rejects_non_integer_data():
    with pytest.raises(ValueError, match="integer-valued"):
        Dequantize().fit(continuous())


@pytest.mark.parametrize("preprocessing", ["standardize", "logit", None])
def test_chain_training_batch_lies_in_the_dequantization_cells(preprocessing):
    x = integers()
    chain = make_preprocessing(preprocessing, bounds=(0, 16), dequantize=True).fit(x)
    batch = chain(chain.augment(x, gen(1)))[0]
    dequantized = Chain(*chain.transforms[1:]).inverse(batch)
    assert torch.all(dequantized >= x - 1e-9) and torch.all(dequantized < x + 1)
    assert torch.unique(dequantized - x).numel() > 1  # noise, not a constant shift
    torch.testing.assert_close(chain.inverse(batch), x, rtol=0, atol=0)


def test_chain_augment_is_identity_without_dequantize():
    x = continuous()
    chain = make_preprocessing("standardize").fit(x)
    assert chain.augment(x, gen(0)) is x


def test_chain_requires_stochastic_stage_first():
    with pytest.raises(ValueError, match="first stage"):
        Chain(Standardize(), Dequantize())


def test_chain_check_reports_out_of_box_values():
    x = integers()
    chain = make_preprocessing("logit", bounds=(0, 16), dequantize=True).fit(x)
    chain.check(x)
    with pytest.raises(ValueError, match=r"X has 1 value\(s\) outside.*Dequantize"):
        chain.check(torch.tensor([[0.0, 17.0, 3.0]], dtype=torch.float64))
    make_preprocessing("standardize").fit(x).check(x + 1e6)  # nothing to check


def test_make_preprocessing_options():
    assert [type(t) for t in make_preprocessing(None).transforms] == []
    assert [type(t) for t in make_preprocessing("standardize").transforms] == [Standardize]
    chain = make_preprocessing("logit", bounds=(0, 16))
    assert [type(t) for t in chain.transforms] == [Logit]
    assert chain.transforms[0].bounds == (0.0, 16.0)
    chain = make_preprocessing(None, dequantize=True)
    assert [type(t) for t in chain.transforms] == [Dequantize]


def test_make_preprocessing_dequantize_shifts_the_upper_bound():
    chain = make_preprocessing("logit", bounds=(0, 16), dequantize=True)
    assert [type(t) for t in chain.transforms] == [Dequantize, Logit]
    assert chain.transforms[1].bounds == (0.0, 17.0)
    chain = make_preprocessing("logit", bounds=([0, 1], [5, 6]), dequantize=True)
    assert chain.transforms[1].bounds == ([0.0, 1.0], [6.0, 7.0])
    x = integers()
    inferred = make_preprocessing("logit", dequantize=True).fit(x).transforms[1]
    assert torch.all(inferred.low < x.amin(0)) and torch.all(inferred.high > x.amax(0) + 1)


@pytest.mark.parametrize("name", ["Standardize", "gaussian", "", 3])
def test_make_preprocessing_rejects_unknown_names(name):
    with pytest.raises(ValueError, match=r"'standardize', 'logit', None"):
        make_preprocessing(name)


@pytest.mark.parametrize("bounds", [(1, 1), (2, 1), ([0, 3], [1, 2]), (0,), "ab", (0, math.inf)])
def test_make_preprocessing_rejects_bad_bounds(bounds):
    with pytest.raises(ValueError, match="bounds"):
        make_preprocessing("logit", bounds=bounds)


@pytest.mark.parametrize("name", CASES)
def test_pickle_round_trip(name):
    t, x = fitted(name)
    clone = pickle.loads(pickle.dumps(t))
    y, ladj = t(x)
    y2, ladj2 = clone(x)
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    torch.testing.assert_close(ladj2, ladj, rtol=0, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_float32(name):
    t, x = fitted(name)
    y64, ladj64 = t(x)
    y32, ladj32 = t(x.float())  # float64 buffers, float32 input
    assert y32.dtype == torch.float32 and ladj32.dtype == torch.float32
    t32 = t.to(torch.float32)
    y, ladj = t32(x.float())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ladj.double(), ladj64, rtol=1e-4, atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(
    stages=st.lists(st.sampled_from(["standardize", "logit"]), min_size=1, max_size=3),
    n=st.integers(1, 20),
    features=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    spread=st.floats(1e-2, 1e3),
)
def test_random_chains_are_invertible(stages, n, features, seed, spread):
    x = spread * torch.randn(n, features, generator=gen(seed), dtype=torch.float64)
    chain = Chain(*[Standardize() if s == "standardize" else Logit() for s in stages]).fit(x)
    y, ladj = chain(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    torch.testing.assert_close(chain.inverse(y), x, rtol=1e-8, atol=1e-8 * spread)


def test_support_marks_the_rows_inside_every_stage_closed_box():
    x = integers()
    chain = make_preprocessing("logit", bounds=(0, 16), dequantize=True).fit(x)
    rows = torch.tensor([[0.0, 15.0, 3.0], [0.0, 17.0, 3.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    # Dequantize maps 15 to the cell centre 15.5, inside (0, 16); 17 -> 17.5 is outside.
    assert chain.support(rows).tolist() == [True, False, False]
    assert make_preprocessing("standardize").fit(x).support(rows + 1e6).all()
    assert Logit((0, 16)).fit(boxed()).support(torch.tensor([[0.0, 16.0, 8.0]])).all()
