"""The orchestration of skebflow.sampling on torch objects: a flow and its preprocessing.

The flow is one dense layer whose energy is that of a Gaussian with correlation
``RHO``, so every conditional is known in closed form; comparisons are in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skebflow.sampling._conditional as conditional
from skebflow.nn._flow import EnergyFlow
from skebflow.nn._linear import Dense
from skebflow.preprocessing._logit import Logit
from skebflow.preprocessing._transforms import Chain, Standardize
from skebflow.sampling import (
    MIN_ACCEPTANCE,
    RHAT_THRESHOLD,
    ImputationReport,
    check_observed,
    conditional_draws,
    conditional_fill,
    refine,
    to_x,
)

RHO = 0.8
NAN = float("nan")


@pytest.fixture(scope="module")
def flow() -> EnergyFlow:
    cov = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64)
    flow = EnergyFlow([Dense(2)], features=2).double().requires_grad_(False)
    with torch.no_grad():
        flow.layers[0].weight.copy_(torch.linalg.inv(torch.linalg.cholesky(cov)))
    return flow


def _rows(values: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(values, dtype=torch.float64)
    return x, torch.isnan(x)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_conditional_fill_gives_the_gaussian_conditional_mean(flow):
    x1 = [-1.5, 0.0, 0.7, 2.0]
    x, missing = _rows([[v, NAN] for v in x1 for _ in range(10)] + [[0.3, -0.2]])
    mean, draw, report = conditional_fill(flow, Chain(), x, missing, generator=_gen(0))
    for i, v in enumerate(x1):  # 10 rows × 4 chains × 150 kept steps each
        assert abs(float(mean[10 * i : 10 * i + 10, 1].mean()) - RHO * v) < 0.04, v
    observed = ~missing
    assert torch.equal(mean[observed], x[observed]) and torch.equal(draw[observed], x[observed])
    assert torch.isfinite(mean).all() and torch.isfinite(draw).all()
    assert np.isnan(report.rhat[-1]) and np.isfinite(report.rhat[:-1]).all()
    assert 0.45 < np.median(report.acceptance[:-1]) < 0.7
    assert not report.not_mixed.any()
    assert (report.n_steps, report.n_chains) == (200, 4)


def test_conditional_fill_is_reproducible_and_seed_sensitive(flow):
    x, missing = _rows([[1.0, NAN], [NAN, -0.5]])

    def fill(seed: int) -> torch.Tensor:
        mean, draw, _ = conditional_fill(
            flow, Chain(), x, missing, n_steps=30, n_chains=2, generator=_gen(seed)
        )
        return torch.cat([mean, draw])

    assert torch.equal(fill(1), fill(1))
    assert not torch.equal(fill(1), fill(2))


def test_a_fixed_step_size_is_reported(flow):
    x, missing = _rows([[1.0, NAN], [NAN, -0.5]])
    _, _, report = conditional_fill(
        flow, Chain(), x, missing, n_steps=20, n_chains=2, step_size=0.3, generator=_gen(3)
    )
    np.testing.assert_allclose(report.step_size, 0.3, rtol=1e-15)


def test_conditional_draws_have_the_conditional_variance(flow):
    x, missing = _rows([[1.0, NAN], [NAN, -0.5], [0.2, 0.4]])
    draws = conditional_draws(
        flow, Chain(), x, missing, n_samples=1000, n_steps=50, generator=_gen(4)
    )
    assert draws.shape == (3, 1000, 2) and draws.dtype == torch.float64
    assert bool((draws[0, :, 0] == 1.0).all()) and bool((draws[1, :, 1] == -0.5).all())
    assert torch.equal(draws[2], x[2].expand(1000, 2))  # a complete row comes back as given
    for row, given, col in ((0, 1.0, 1), (1, -0.5, 0)):
        sample = draws[row, :, col].numpy()
        assert abs(sample.mean() - RHO * given) < 0.06
        assert abs(sample.var() / (1 - RHO**2) - 1) < 0.15


def test_rows_with_nothing_observed_get_the_flow_mean_and_joint_draws(flow):
    x, missing = _rows([[NAN, NAN], [1.0, NAN]])
    mean, draw, report = conditional_fill(flow, Chain(), x, missing, generator=_gen(5))
    assert float(mean[0].abs().max()) < 0.06  # the mean of 4096 exact samples
    assert not torch.equal(mean[0], draw[0])
    assert np.isnan(report.rhat[0]) and np.isfinite(report.rhat[1])
    joint = conditional_draws(flow, Chain(), x[:1], missing[:1], n_samples=2000, generator=_gen(6))
    d = joint[0].numpy()
    assert np.all(np.abs(d.mean(axis=0)) < 0.08)
    assert abs(np.corrcoef(d.T)[0, 1] - RHO) < 0.03


def test_rows_run_in_batches_of_bounded_memory(flow, monkeypatch):
    x, missing = _rows([[v, NAN] for v in np.linspace(-1, 1, 5)])
    monkeypatch.setattr(conditional, "MAX_PRECONDITIONER_ENTRIES", 8)  # 2 rows of D² = 4
    calls = []
    run_chains = conditional.run_chains

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(len(args[1]))
        return run_chains(*args, **kwargs)

    monkeypatch.setattr(conditional, "run_chains", counting)
    mean, _, report = conditional_fill(flow, Chain(), x, missing, n_steps=100, generator=_gen(7))
    assert calls == [2, 2, 1]
    assert np.isfinite(report.rhat).all()
    np.testing.assert_allclose(mean[:, 1].numpy(), RHO * x[:, 0].numpy(), atol=0.1)


def test_the_mean_is_taken_in_the_units_of_x(flow):
    # the flow models the standardized data: x = m + s·y
    data = torch.tensor([[0.0, 10.0], [4.0, 30.0], [2.0, 5.0]], dtype=torch.float64)
    chain = Chain(Standardize()).fit(data)
    m, s = chain.transforms[0].mean, chain.transforms[0].scale
    x1 = float(m[0] + 1.5 * s[0])
    x, missing = _rows([[x1, NAN]] * 20)
    mean, _, _ = conditional_fill(flow, chain, x, missing, generator=_gen(8))
    expected = float(m[1] + s[1] * RHO * 1.5)
    assert abs(float(mean[:, 1].mean()) - expected) < 0.04 * float(s[1])
    assert torch.equal(mean[:, 0], x[:, 0])
    y = torch.randn(3, 4, 2, generator=_gen(9), dtype=torch.float64)
    torch.testing.assert_close(to_x(chain, y), m + s * y, rtol=1e-14, atol=1e-14)


def test_refine_keeps_the_flow_distribution(flow):
    exact = flow.sample(2000, generator=_gen(10))
    refined = refine(flow, Chain(), exact, n_steps=20, generator=_gen(11))
    assert refined.shape == exact.shape and refined.dtype == torch.float64
    assert not torch.equal(refined, exact)
    r = refined.numpy()
    assert np.all(np.abs(r.mean(axis=0)) < 0.08)
    assert abs(np.corrcoef(r.T)[0, 1] - RHO) < 0.03
    np.testing.assert_allclose(r.var(axis=0), 1.0, rtol=0.1)
    assert torch.equal(refined, refine(flow, Chain(), exact, n_steps=20, generator=_gen(11)))


def test_observed_entries_outside_the_support_are_rejected():
    chain = Chain(Logit((0.0, 1.0))).fit(torch.rand(10, 2, dtype=torch.float64))
    x, missing = _rows([[0.5, NAN], [NAN, 0.2]])
    check_observed(chain, x, missing)  # the NaNs are not checked
    x, missing = _rows([[1.5, NAN]])
    with pytest.raises(ValueError, match="outside"):
        check_observed(chain, x, missing)


def test_report_flags_rows_that_did_not_mix():
    eps = 1e-9
    report = ImputationReport(
        acceptance=np.array([0.6, 0.6, MIN_ACCEPTANCE, MIN_ACCEPTANCE - eps, np.nan]),
        independence_acceptance=np.full(5, 0.3),
        rhat=np.array([1.0, RHAT_THRESHOLD + eps, RHAT_THRESHOLD, 1.0, np.nan]),
        step_size=np.ones(5),
        n_steps=100,
        n_chains=2,
    )
    np.testing.assert_array_equal(report.not_mixed, [False, True, False, True, False])
    assert report.summary().startswith("4 rows imputed with 2 chains of 100 steps")
    assert report.summary().endswith("2 rows not mixed")


def test_chains_run_in_batches_of_bounded_size(monkeypatch):
    """Imputation's memory grows with the rows of one batch (about 0.3 MB per row at
    D = 10): all rows used to run at once (20,000 rows peaked at 5 GB)."""
    from skebflow.sampling import MAX_CHAIN_ROWS

    flow = EnergyFlow([Dense(3)], features=3).double().requires_grad_(False)
    x = torch.randn(2 * MAX_CHAIN_ROWS + 5, 3, generator=torch.Generator().manual_seed(0))
    x = x.double()
    x[:, 1] = float("nan")
    sizes = []
    original = conditional.run_chains

    def recording(energy, y, free, *args, **kwargs):
        sizes.append(len(y))
        return original(energy, y, free, *args, **kwargs)

    monkeypatch.setattr(conditional, "run_chains", recording)
    mean, _, report = conditional.conditional_fill(
        flow, Chain(), x, torch.isnan(x), n_steps=8, generator=torch.Generator().manual_seed(1)
    )
    assert sizes == [MAX_CHAIN_ROWS, MAX_CHAIN_ROWS, 5]
    assert bool(torch.isfinite(mean).all()) and np.isfinite(report.rhat).all()
