"""The MCMC kernel of skebflow.sampling: its pieces one by one, then the driver.

Targets are Gaussians (and one mixture) with known densities, written as energies in
torch float64; every comparison is in float64.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from skebflow.sampling import (
    COVARIANCE_RIDGE,
    N_PROPOSALS,
    RHAT_THRESHOLD,
    TARGET_ACCEPTANCE,
    ChainOptions,
    ChainState,
    GaussianConditional,
    adapt_step,
    independence_move,
    initial_states,
    mala_move,
    recycle,
    run_chains,
    split_rhat,
)

COV = torch.tensor([[1.0, 0.6, 0.2], [0.6, 1.5, -0.4], [0.2, -0.4, 0.8]], dtype=torch.float64)


def _gaussian_energy(cov: torch.Tensor, mean: torch.Tensor | None = None):
    precision = torch.linalg.inv(cov)
    centre = torch.zeros(len(cov), dtype=cov.dtype) if mean is None else mean

    def energy(y: torch.Tensor) -> torch.Tensor:
        d = y - centre
        return 0.5 * ((d @ precision) * d).sum(dim=1)

    return energy


def _draws(cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, len(cov), generator=torch.Generator().manual_seed(seed), dtype=cov.dtype)
    return z @ torch.linalg.cholesky(cov).T


def _mask(free: torch.Tensor) -> torch.Tensor:
    return free.to(torch.float64)[:, None, :]


def _conditional(cov: np.ndarray, y: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean (free block) and covariance of N(0, cov) given y on ~free."""
    f, o = np.flatnonzero(free), np.flatnonzero(~free)
    gain = cov[np.ix_(f, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
    return gain @ y[o], cov[np.ix_(f, f)] - gain @ cov[np.ix_(o, f)]


# ------------------------------------------------------------------ Gaussian conditional
def test_gaussian_conditional_is_the_schur_complement_of_the_samples_gaussian():
    samples = _draws(COV, 4000, seed=0)
    y = torch.tensor([[0.7, -1.2, 0.3], [0.1, 0.2, 0.3], [-0.5, 0.4, 2.0]], dtype=torch.float64)
    free = torch.tensor([[False, True, True], [True, True, True], [True, False, False]])
    gauss = GaussianConditional.fit(samples, y, free)
    s = samples.numpy()
    mu = s.mean(axis=0)
    cov = np.cov(s.T)
    cov += COVARIANCE_RIDGE * max(np.diag(cov).mean(), 1.0) * np.eye(3)
    for i in range(3):
        f = free[i].numpy()
        covariance = (gauss.chol[i] @ gauss.chol[i].T).numpy()
        if f.all():
            np.testing.assert_allclose(gauss.mean[i].numpy(), mu, rtol=1e-10)
            np.testing.assert_allclose(covariance, cov, rtol=1e-8)
            continue
        mean, cond_cov = _conditional(cov, y[i].numpy() - mu, f)
        np.testing.assert_allclose(gauss.mean[i, f].numpy(), mu[f] + mean, rtol=1e-8)
        np.testing.assert_array_equal(gauss.mean[i, ~f].numpy(), y[i, ~f].numpy())
        np.testing.assert_allclose(covariance[np.ix_(f, f)], cond_cov, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(covariance[np.ix_(~f, ~f)], np.eye((~f).sum()), atol=1e-12)
        np.testing.assert_allclose(covariance[np.ix_(f, ~f)], 0.0, atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    torch.testing.assert_close(gauss.chol_inv @ gauss.chol, eye, rtol=0, atol=1e-10)


def test_initial_states_clamp_the_observed_entries_and_weight_towards_the_target():
    # proposal ~ N(0, 1) in the free coordinate; target N(1, 0.5²) there
    samples = _draws(torch.eye(2, dtype=torch.float64), 4000, seed=1)
    energy = _gaussian_energy(
        torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64)),
        torch.tensor([0.0, 1.0], dtype=torch.float64),
    )
    y = torch.tensor([[0.3, 0.0]] * 400, dtype=torch.float64)
    free = torch.tensor([[False, True]] * 400)
    gauss = GaussianConditional.fit(samples, y, free)
    generator = torch.Generator().manual_seed(2)
    states = initial_states(energy, gauss, free, 4, generator)
    assert states.shape == (400, 4, 2)
    assert torch.equal(states[:, :, 0], torch.full((400, 4), 0.3, dtype=torch.float64))
    drawn = states[:, :, 1].flatten()
    # 4 × N_PROPOSALS proposals per row: a small resampling bias, MC error about 0.013
    assert N_PROPOSALS == 16
    assert abs(float(drawn.mean()) - 1.0) < 0.06
    assert abs(float(drawn.std()) - 0.5) < 0.06
    # the proposal's own mean (0) is far: the weights did the work
    assert float(gauss.mean[:, 1].abs().max()) < 0.1


# ------------------------------------------------------------------ the MALA move
def _standard_setup(n_chains: int, seed: int = 0):
    cov = COV[:2, :2]
    energy = _gaussian_energy(cov)
    samples = _draws(cov, 4000, seed=seed)
    y = torch.zeros(1, 2, dtype=torch.float64)
    free = torch.ones(1, 2, dtype=torch.bool)
    gauss = GaussianConditional.fit(samples, y, free)
    start = _draws(cov, n_chains, seed=seed + 1)[None]
    return energy, gauss, free, ChainState.at(energy, start, _mask(free))


def test_mala_move_without_metropolis_is_the_unadjusted_langevin_step():
    energy, gauss, free, chains = _standard_setup(50)
    mask = _mask(free)
    h = torch.tensor([0.7], dtype=torch.float64)
    moved, proposal, alpha = mala_move(
        energy, gauss, chains, mask, h, metropolis=False, generator=torch.Generator().manual_seed(3)
    )
    replay = torch.Generator().manual_seed(3)
    xi = torch.randn((1, 50, 2), generator=replay, dtype=torch.float64)
    chol = gauss.chol[0]
    precision = torch.linalg.inv(COV[:2, :2])
    grad = -chains.state[0] @ precision  # ∇ log π
    expected = chains.state[0] + 0.5 * 0.49 * grad @ chol @ chol.T + 0.7 * xi[0] @ chol.T
    torch.testing.assert_close(proposal[0], expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(moved.state, proposal)  # every finite proposal is taken
    assert torch.equal(alpha, torch.ones(1, 50, dtype=torch.float64))
    torch.testing.assert_close(moved.grad, -moved.state @ precision, rtol=1e-12, atol=1e-12)


def test_mala_move_without_metropolis_draws_no_uniform():
    energy, gauss, free, chains = _standard_setup(5)
    h = torch.tensor([0.7], dtype=torch.float64)
    for metropolis, extra in ((False, 0), (True, 5)):
        generator = torch.Generator().manual_seed(4)
        mala_move(energy, gauss, chains, _mask(free), h, metropolis=metropolis, generator=generator)
        replay = torch.Generator().manual_seed(4)
        torch.randn((1, 5, 2), generator=replay, dtype=torch.float64)
        torch.rand(extra, generator=replay, dtype=torch.float64)
        assert torch.equal(torch.rand(4, generator=generator), torch.rand(4, generator=replay))


@pytest.mark.parametrize("metropolis", [True, False])
def test_mala_move_rejects_proposals_whose_energy_is_undefined(metropolis):
    _, gauss, free, _ = _standard_setup(8)
    start = _draws(COV[:2, :2], 8, seed=5)[None]
    base = _gaussian_energy(COV[:2, :2])

    def only_at_start(y: torch.Tensor) -> torch.Tensor:
        at_start = (y[:, None, :] == start[0][None]).all(dim=2).any(dim=1)
        return torch.where(at_start, base(y), torch.full_like(y[:, 0], math.nan))

    chains = ChainState.at(only_at_start, start, _mask(free))
    assert torch.isfinite(chains.value).all()
    moved, _, alpha = mala_move(
        only_at_start,
        gauss,
        chains,
        _mask(free),
        torch.tensor([0.5], dtype=torch.float64),
        metropolis=metropolis,
        generator=torch.Generator().manual_seed(6),
    )
    assert torch.equal(moved.state, start)
    assert torch.equal(moved.value, chains.value)
    if metropolis:
        assert torch.equal(alpha, torch.zeros_like(alpha))


def test_mala_leaves_the_target_invariant_and_ula_does_not():
    energy, gauss, free, chains = _standard_setup(20000, seed=7)
    h = torch.tensor([1.2], dtype=torch.float64)
    target = COV[:2, :2].numpy()
    variances = {}
    for metropolis in (True, False):
        current, generator = chains, torch.Generator().manual_seed(8)
        for _ in range(10):
            current, _, _ = mala_move(
                energy, gauss, current, _mask(free), h, metropolis=metropolis, generator=generator
            )
        states = current.state[0].numpy()
        variances[metropolis] = np.diag(np.cov(states.T)) / np.diag(target)
        if metropolis:
            assert np.all(np.abs(states.mean(axis=0)) < 0.04)
            np.testing.assert_allclose(np.cov(states.T), target, atol=0.06)
    assert np.all(np.abs(variances[True] - 1.0) < 0.05)
    # ULA with a whitened step h: stationary variance 1 / (1 - h²/4) = 1.56 here
    assert np.all(variances[False] > 1.3)


# ------------------------------------------------------------------ the independence move
def _independence_setup(start: torch.Tensor):
    samples = _draws(torch.eye(2, dtype=torch.float64), 4000, seed=9)  # proposal ~ N(0, 1)
    energy = _gaussian_energy(
        torch.diag(torch.tensor([1.0, 0.64], dtype=torch.float64)),
        torch.tensor([0.0, 0.5], dtype=torch.float64),
    )  # target N(0.5, 0.8²) in the free coordinate
    y = torch.tensor([[0.3, 0.0]], dtype=torch.float64)
    free = torch.tensor([[False, True]])
    gauss = GaussianConditional.fit(samples, y, free)
    states = torch.stack([torch.full_like(start, 0.3), start], dim=-1)[None]
    return energy, gauss, _mask(free), ChainState.at(energy, states, _mask(free))


def test_independence_move_leaves_a_gaussian_target_invariant():
    exact = 0.5 + 0.8 * torch.randn(20000, generator=torch.Generator().manual_seed(10))
    energy, gauss, mask, chains = _independence_setup(exact.double())
    generator = torch.Generator().manual_seed(11)
    betas = []
    for _ in range(5):
        chains, beta = independence_move(energy, gauss, chains, mask, generator=generator)
        betas.append(float(beta.mean()))
    x = chains.state[0, :, 1].numpy()
    assert np.all(chains.state[0, :, 0].numpy() == 0.3)
    assert abs(x.mean() - 0.5) < 0.025  # MC error about 0.006
    assert abs(x.var() / 0.64 - 1.0) < 0.05
    assert min(betas) > 0.5  # the chains did move
    assert not torch.equal(chains.state[0, :, 1], exact.double())
    # the gradient of a chain that jumped is the one at its new state
    fresh = ChainState.at(energy, chains.state, mask)
    torch.testing.assert_close(chains.grad, fresh.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chains.value, fresh.value, rtol=1e-12, atol=1e-12)


def test_independence_moves_alone_reach_the_target_from_a_point():
    start = torch.full((20000,), 3.0, dtype=torch.float64)
    energy, gauss, mask, chains = _independence_setup(start)
    generator = torch.Generator().manual_seed(12)
    for _ in range(30):
        chains, _ = independence_move(energy, gauss, chains, mask, generator=generator)
    x = chains.state[0, :, 1].numpy()
    assert abs(x.mean() - 0.5) < 0.03 and abs(x.var() / 0.64 - 1.0) < 0.06


# ------------------------------------------------------------------ adaptation, recycling
def test_adaptation_moves_the_step_towards_the_target_acceptance():
    log_h = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    alpha = torch.tensor([[0.9, 1.0], [0.1, 0.2], [0.574, 0.574]], dtype=torch.float64)
    out = adapt_step(log_h, alpha, 3)
    gain = 4.0**-0.6
    expected = 0.1 + gain * (alpha.mean(dim=1) - TARGET_ACCEPTANCE)
    torch.testing.assert_close(out, expected, rtol=1e-15, atol=1e-15)
    assert out[0] > 0.1 and out[1] < 0.1 and abs(float(out[2]) - 0.1) < 1e-15
    pooled = adapt_step(log_h, alpha, 3, pooled=True)
    torch.testing.assert_close(pooled, 0.1 + gain * (alpha.mean() - TARGET_ACCEPTANCE).expand(3))
    # the gain decreases: later steps move less
    assert abs(float(adapt_step(log_h, alpha, 30)[0]) - 0.1) < float(out[0]) - 0.1


def test_recycling_is_the_expected_statistic_of_the_next_state():
    state = torch.tensor([[[1.0], [2.0], [3.0]]], dtype=torch.float64)
    proposal = torch.tensor([[[5.0], [math.nan], [7.0]]], dtype=torch.float64)
    alpha = torch.tensor([[1.0, 0.0, 0.25]], dtype=torch.float64)
    out = recycle(lambda t: t**2, state, proposal, alpha)
    # 25 (taken), 4 (rejected; its NaN proposal contributes nothing), 0.25·49 + 0.75·9
    torch.testing.assert_close(out, torch.tensor([[25.0 + 4.0 + 12.25 + 6.75]]).double())


# ------------------------------------------------------------------ split-R̂
def test_split_rhat_against_the_formula():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(2, 8, 3))
    variances = rng.uniform(0.5, 2.0, size=(2, 8, 3))
    length = 50
    w = variances.mean(axis=1)
    b = length * means.var(axis=1, ddof=1)
    expected = np.sqrt(((length - 1) / length * w + b / length) / w)
    got = split_rhat(torch.as_tensor(means), torch.as_tensor(variances), length).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.all(got > 1.0)
    apart = torch.tensor([[[0.0], [0.0], [3.0], [3.0]]], dtype=torch.float64)  # two modes
    assert float(split_rhat(apart, torch.ones_like(apart), length)) > RHAT_THRESHOLD
    mixed = torch.zeros_like(apart)  # the same mean in every half: at most 1
    assert float(split_rhat(mixed, torch.ones_like(apart), length)) <= 1.0
    still = split_rhat(torch.zeros(1, 4, 2).double(), torch.zeros(1, 4, 2).double(), length)
    assert torch.equal(still, torch.ones(1, 2, dtype=torch.float64))


# ------------------------------------------------------------------ the driver
def _repeat_rows(y: list[list[float]], free: list[list[bool]], times: int):
    return (
        torch.tensor(y, dtype=torch.float64).repeat(times, 1),
        torch.tensor(free).repeat(times, 1),
    )


def test_run_chains_samples_the_gaussian_conditional():
    y, free = _repeat_rows([[0.8, 0.0, -0.5], [0.0, 0.0, 1.0]], [[0, 1, 0], [1, 1, 0]], 40)
    free = free.bool()
    samples = _draws(COV, 4096, seed=13)
    run = run_chains(
        _gaussian_energy(COV),
        y,
        free,
        samples,
        statistic=lambda t: t,
        generator=torch.Generator().manual_seed(14),
    )
    assert run.last.shape == (80, 4, 3) and run.mean.shape == (80, 3)
    observed = ~free[:, None, :].expand_as(run.last)
    assert torch.equal(run.last[observed], y[:, None, :].expand_as(run.last)[observed])
    for row in (0, 1):
        f = free[row].numpy()
        mean, cov = _conditional(COV.numpy(), y[row].numpy(), f)
        means = run.mean[row::2][:, f].numpy()
        np.testing.assert_allclose(means.mean(axis=0), mean, atol=0.04)
        last = run.last[row::2][:, :, f].reshape(-1, int(f.sum())).numpy()
        np.testing.assert_allclose(np.cov(last.T).reshape(cov.shape), cov, rtol=0.3, atol=0.05)
    assert 0.45 < float(run.acceptance.median()) < 0.7
    assert float(run.rhat.max()) < 1.1
    assert bool((run.independence_acceptance > 0.3).all())


def test_run_chains_is_reproducible_for_one_generator():
    y, free = _repeat_rows([[0.8, 0.0, -0.5]], [[False, True, True]], 3)
    samples = _draws(COV, 512, seed=15)

    def run(seed: int) -> torch.Tensor:
        options = ChainOptions(n_steps=20, n_chains=2)
        out = run_chains(
            _gaussian_energy(COV),
            y,
            free,
            samples,
            statistic=lambda t: t,
            options=options,
            generator=torch.Generator().manual_seed(seed),
        )
        return torch.cat([out.mean.flatten(), out.last.flatten(), out.step_size])

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_run_chains_pooled_adaptation_moves_every_row_alike():
    y, free = _repeat_rows([[0.8, 0.0, -0.5], [0.0, 0.0, 0.0]], [[0, 1, 1], [1, 1, 1]], 2)
    samples = _draws(COV, 512, seed=16)
    steps = {}
    for pooled in (False, True):
        run = run_chains(
            _gaussian_energy(COV),
            y,
            free.bool(),
            samples,
            statistic=lambda t: t,
            options=ChainOptions(n_steps=40, n_chains=3, pooled=pooled),
            generator=torch.Generator().manual_seed(17),
        )
        # the step starts at d^(-1/6) (d free coordinates) and then moves
        moved = run.step_size.log() + free.sum(dim=1).double().log() / 6.0
        steps[pooled] = moved - moved[0]
    torch.testing.assert_close(steps[True], torch.zeros(4, dtype=torch.float64))
    assert float(steps[False].abs().max()) > 0.01


def test_a_fixed_step_is_not_adapted():
    y, free = _repeat_rows([[0.8, 0.0, -0.5]], [[False, True, True]], 2)
    run = run_chains(
        _gaussian_energy(COV),
        y,
        free,
        _draws(COV, 512, seed=18),
        statistic=lambda t: t,
        options=ChainOptions(n_steps=20, n_chains=2, step_size=0.3),
        generator=torch.Generator().manual_seed(19),
    )
    assert torch.equal(run.step_size, torch.full((2,), 0.3, dtype=torch.float64).log().exp())


def _bimodal_energy(y: torch.Tensor) -> torch.Tensor:
    """x0 ~ N(0, 1) independent of x1 ~ 0.3 N(-2, 0.4²) + 0.7 N(2, 0.4²)."""
    low = math.log(0.3) - 0.5 * ((y[:, 1] + 2.0) / 0.4) ** 2
    high = math.log(0.7) - 0.5 * ((y[:, 1] - 2.0) / 0.4) ** 2
    return 0.5 * y[:, 0] ** 2 - torch.logaddexp(low, high)


def test_independence_moves_let_chains_cross_between_modes():
    generator = torch.Generator().manual_seed(20)
    modes = torch.where(torch.rand(4000, generator=generator) < 0.3, -2.0, 2.0)
    samples = torch.stack(
        [
            torch.randn(4000, generator=generator),
            modes + 0.4 * torch.randn(4000, generator=generator),
        ],
        dim=1,
    ).double()
    y, free = _repeat_rows([[0.0, 0.0]], [[False, True]], 20)
    rhat = {}
    for independence in (True, False):
        run = run_chains(
            _bimodal_energy,
            y,
            free,
            samples,
            statistic=lambda t: t,
            options=ChainOptions(n_steps=200, independence=independence),
            generator=torch.Generator().manual_seed(21),
        )
        rhat[independence] = float(run.rhat.median())
        if independence:
            assert abs(float(run.mean[:, 1].mean()) - 0.8) < 0.15  # 0.7·2 - 0.3·2
            assert float(run.independence_acceptance.min()) > 0.15  # jumps happen in every row
    assert rhat[True] < 1.1
    assert rhat[False] > RHAT_THRESHOLD  # without jumps each chain keeps its mode


def test_chain_options_are_frozen():
    options = ChainOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.n_steps = 3  # type: ignore[misc]
    assert dataclasses.replace(options, independence=False).independence is False


def test_a_chain_that_never_finds_a_finite_energy_is_an_error():
    y = torch.zeros(3, 2, dtype=torch.float64)
    free = torch.tensor([[False, True]] * 3)
    samples = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def undefined(points: torch.Tensor) -> torch.Tensor:
        return points.sum(dim=1) * float("nan")

    with pytest.raises(FloatingPointError, match="not finite at any state"):
        run_chains(
            undefined,
            y,
            free,
            samples,
            statistic=lambda t: t,
            options=ChainOptions(n_steps=4, n_chains=2),
            generator=torch.Generator().manual_seed(1),
        )
