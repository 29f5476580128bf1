"""The stopping rule: patience, and no stop while the monitored trend still rises."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from skebflow.nn._architectures import build_fc
from skebflow.training._stopping import rising_trend, sen_slope, trend_z_statistic
from skebflow.training._trainer import TrainConfig, Trainer


@pytest.mark.parametrize("seed", range(5))
def test_the_trend_statistic_is_kendalls_tau_test(seed):
    """Without ties, Mann-Kendall's S is Kendall's tau times n(n-1)/2 against the index,
    and the z score's two-sided p-value is scipy's (normal approximation)."""
    values = np.random.default_rng(seed).normal(size=30) + 0.02 * np.arange(30)
    z = trend_z_statistic(values.tolist())
    tau = stats.kendalltau(np.arange(30), values).statistic
    s = tau * 30 * 29 / 2
    assert z == pytest.approx((s - np.sign(s)) / np.sqrt(30 * 29 * 65 / 18), rel=1e-12)


def test_short_histories_and_monotone_sequences():
    assert trend_z_statistic([1.0, 2.0]) == 0.0
    assert trend_z_statistic(list(range(40))) > 8  # a clean rise
    assert trend_z_statistic(list(range(40, 0, -1))) < -8
    assert not rising_trend([1.0, 2.0, 3.0], window=4, threshold=2.0)  # too few values


def test_one_spike_does_not_decide_the_trend():
    """A least-squares slope through a slow rise with one high epoch early in the window
    loses its significance; the count of ordered pairs barely moves."""
    rng = np.random.default_rng(0)
    values = 0.002 * np.arange(40) + 0.02 * rng.standard_normal(40)
    spiked = values.copy()
    spiked[6] += 0.3
    assert rising_trend(values.tolist(), 40, 2.0) and rising_trend(spiked.tolist(), 40, 2.0)
    fit = stats.linregress(np.arange(40), spiked)
    assert fit.slope / fit.stderr < 2  # what a t test on the slope would have concluded


def _stop_epoch(
    scores: list[float], *, patience: int, window: int, tol: float = TrainConfig.tol
) -> int:
    """Run a tiny trainer whose validation score follows ``scores``; return its epochs."""
    flow = build_fc(2).double()
    config = TrainConfig(
        max_iter=len(scores),
        n_iter_no_change=patience,
        trend_window=window,
        batch_size=8,
        tol=tol,
    )
    trainer = Trainer(
        flow, lambda f, y, g: (f.energy(y)).mean(), config, generator=torch.Generator()
    )
    values = iter(scores)
    result = trainer.fit(torch.randn(16, 2, dtype=torch.float64), score_fn=lambda m: next(values))
    return result.n_iter


def test_a_slow_rise_hidden_by_noise_goes_on_and_a_plateau_stops_after_the_patience():
    """The rule the default uses (patience 20, trend over 40 epochs): a score that rises by
    0.002 per epoch under noise of 0.02 makes no new best for 20 epochs, which a fixed
    patience took for convergence; flat noise and a falling score stop after 20."""
    rng = np.random.default_rng(0)
    epochs = np.arange(150)
    noise = 0.02 * rng.standard_normal(150)
    rising = (0.002 * epochs + noise).tolist()
    rising[30] += 0.3  # a lucky high point (epoch 31) that the slow rise does not beat in 150
    flat = noise.tolist()
    falling = (-0.002 * epochs + noise).tolist()
    assert _stop_epoch(rising, patience=20, window=0) == 51  # the fixed patience stops
    assert _stop_epoch(rising, patience=20, window=40) == 150  # the trend keeps it going
    for scores in (flat, falling):
        fixed = _stop_epoch(scores, patience=20, window=0)
        assert _stop_epoch(scores, patience=20, window=40) <= fixed + 20


def test_an_epoch_of_large_data_is_a_bounded_random_subset_of_rows():
    """With ``max_epoch_rows`` an epoch takes that many rows (fresh ones each epoch), so
    its cost stops growing with the data; without it an epoch is a whole pass."""
    data = torch.arange(1000, dtype=torch.float64).reshape(500, 2)
    seen: list[torch.Tensor] = []

    def record(batch, generator):
        seen.append(batch)
        return batch

    flow = build_fc(2).double()
    config = TrainConfig(max_iter=2, batch_size=32, max_epoch_rows=100)
    trainer = Trainer(flow, lambda f, y, g: f.energy(y).mean(), config, generator=torch.Generator())
    trainer.epoch(data, prepare=record)
    first = torch.cat(seen)
    assert trainer.n_steps == 4 and len(first) == 100  # 32 + 32 + 32 + 4 rows
    assert len(torch.unique(first[:, 0])) == 100  # without replacement
    seen.clear()
    trainer.epoch(data, prepare=record)
    assert not torch.equal(torch.cat(seen), first)  # another subset
    whole = Trainer(flow, lambda f, y, g: f.energy(y).mean(), TrainConfig(batch_size=32),
                    generator=torch.Generator())  # fmt: skip
    whole.epoch(data)
    assert whole.n_steps == 16  # ceil(500 / 32)


def test_a_rise_smaller_than_tol_does_not_keep_training():
    """Mann-Kendall counts orders, not sizes: a rise of 1e-6 per epoch (1.6e-4 in 160
    epochs, below one tol of 1e-3) kept a fit running to max_iter. A trend counts only
    when its Theil-Sen slope exceeds tol per n_iter_no_change epochs."""
    creep = [0.01 * i for i in range(40)] + [0.4 + 1e-6 * j for j in range(1, 161)]
    flat = [0.01 * i for i in range(40)] + [0.4] * 160
    assert _stop_epoch(creep, patience=20, window=40, tol=1e-3) == _stop_epoch(
        flat, patience=20, window=40, tol=1e-3
    )
    assert _stop_epoch(creep, patience=20, window=40, tol=1e-3) < 100


def test_sen_slope_is_the_median_pairwise_slope():
    assert sen_slope([0.0, 0.1, 5.0, 0.3, 0.4]) == pytest.approx(0.1)
    assert sen_slope([2.0]) == 0.0
    values = np.random.default_rng(1).normal(size=25)
    expected = stats.theilslopes(values).slope
    assert sen_slope(values.tolist()) == pytest.approx(expected, rel=1e-12)
