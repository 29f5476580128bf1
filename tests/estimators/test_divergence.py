"""A fit that diverged without a NaN says so, with remedies for its configuration.

What ``diagnose`` sees in a finished run is tested in ``tests/training/test_diagnostics.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.estimators._divergence import remedies
from skebflow.exceptions import DivergenceWarning
from tests.helpers import failing_on, quietly


@pytest.fixture(scope="module")
def moons():
    return make_moons(600, noise=0.1, random_state=0)[0]


def test_a_learning_rate_far_too_high_is_reported_with_the_default(moons):
    est = EBFlowDensity(
        objective="ml", learning_rate=0.3, max_iter=15, architecture="coupling", random_state=0
    )
    with pytest.warns(DivergenceWarning) as record:
        est.fit(moons)
    (warning,) = [w for w in record if w.category is DivergenceWarning]
    message = str(warning.message)
    assert warning.filename == __file__
    assert "no epoch improved on the untrained flow" in message
    assert "training loss grew" in message
    assert "learning_rate=0.003 (the default for architecture='coupling'" in message
    assert "objective='ml'" not in message  # already in use
    assert len(est.divergence_) == 2
    # The untrained flow, which scored better on the held-out rows than every epoch, is
    # what was kept: a normalized density that stays near the data.
    assert est.best_iteration_ == 0
    assert np.abs(est.sample(1000, random_state=0)).max() < 10 * np.abs(moons).max()


def test_a_healthy_fit_reports_nothing(moons):
    with failing_on(DivergenceWarning):
        est = EBFlowDensity(max_iter=15, random_state=0).fit(moons)
    assert est.divergence_ == []


@pytest.mark.parametrize("seed", [0, 1])
def test_no_false_alarm_when_the_untrained_flow_is_already_right(seed):
    """On standard Gaussian data the untrained flow is the truth: the best epoch ended a
    few thousandths of a nat below it (-4.357 against -4.350), well within the noise of
    400 validation rows, and that was called divergence."""
    X = np.random.default_rng(seed).normal(size=(2000, 3))
    with quietly(ConvergenceWarning), failing_on(DivergenceWarning):
        est = EBFlowDensity(max_iter=30, random_state=seed).fit(X)
    assert est.divergence_ == []


def test_the_untrained_baseline_is_the_flow_before_any_initialization():
    # Logit-space data far from standard: an ActNorm initialized on the validation rows
    # while the untrained flow was scored gave a baseline of +2.2 nats per sample for
    # uniform data (whose true log-density is 0), and a false alarm.
    X = torch.rand(200, 3, generator=torch.Generator().manual_seed(0)).double().numpy()
    with quietly(ConvergenceWarning), failing_on(DivergenceWarning):
        est = EBFlowDensity(
            preprocessing="logit", bounds=(0.0, 1.0), max_iter=2, n_blocks=1, random_state=0
        ).fit(X)
    assert est.divergence_ == []


def test_remedies_never_recommend_what_is_in_use():
    text = remedies(
        architecture="fc",
        objective="dsm",
        learning_rate=1e-4,
        batch_size=64,
        max_grad_norm=1.0,
        noise_scale=0.05,
        preprocessing="standardize",
    )
    assert "a lower learning_rate (e.g. 3.3e-05" in text
    assert "noise_scale (this fit used 0.05)" in text and "objective='ml'" in text
    assert "max_grad_norm" not in text and "preprocessing" not in text


def test_non_finite_training_names_this_configurations_remedies(moons):
    est = EBFlowDensity(
        objective="ssm",
        learning_rate=1e6,
        max_grad_norm=None,
        max_iter=50,
        ema_decay=None,
        random_state=0,
    )
    with pytest.raises(FloatingPointError, match="this fit used 1e\\+06") as info:
        est.fit(moons[:200])
    assert "max_grad_norm=1.0 (this fit used None)" in str(info.value)


def test_verbose_ends_with_a_summary_line(moons, capsys):
    with pytest.warns(ConvergenceWarning) as record:
        EBFlowDensity(max_iter=3, verbose=1, random_state=0).fit(moons)
    assert {w.filename for w in record} == {__file__}  # the user's line, not sklearn's
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("trained 3 of max_iter=3 epochs in ")
    assert "stopped: reached max_iter" in last and "best epoch" in last
