"""Slow learning checks (``pytest -m slow``): the estimator against scikit-learn's baselines."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.bench._baselines import QUALITY_PEERS
from skebflow.datasets._toys import make_toy, toy_log_density
from tests.helpers import fit_quietly

pytestmark = pytest.mark.slow


def _baselines(X: np.ndarray, X_test: np.ndarray) -> tuple[float, float]:
    """Held-out log-likelihoods of the BIC-chosen GaussianMixture and the CV-tuned KDE."""
    scores = {name: fit(X, 0).score_samples(X_test).mean() for name, fit in QUALITY_PEERS.items()}
    return float(scores["GaussianMixture"]), float(scores["KernelDensity"])


def test_flow_beats_gaussian_mixture_and_tuned_kde_on_rings():
    X = make_toy("rings", 3000, random_state=0)
    X_test = make_toy("rings", 5000, random_state=1)
    truth = float(np.mean(toy_log_density("rings", X_test)))
    gmm, kde = _baselines(X, X_test)
    est = EBFlowDensity(
        objective="ml", n_blocks=8, max_iter=300, n_iter_no_change=30, random_state=0
    )
    fit_quietly(est, X, ConvergenceWarning)
    flow = est.score(X_test)
    assert flow <= truth + 0.01  # no estimator beats the truth (up to sampling noise)
    assert flow > gmm and flow > kde, (flow, gmm, kde, truth)


@pytest.mark.xfail(
    reason="score matching on the default spline flow does not yet learn rings (issue 9)",
    strict=True,
)
@pytest.mark.parametrize("objective", ["ssm", "dsm", "fdssm"])
def test_score_matching_learns_a_smooth_density(objective):
    """On the rings toy each score-matching objective gets within 0.1 nats of the truth.

    (Well-separated modes, such as the 8-Gaussian toy, are a known blind spot of score
    matching: the Fisher divergence does not see the weights of disconnected modes.)
    """
    X = make_toy("rings", 2000, random_state=0)
    X_test = make_toy("rings", 5000, random_state=1)
    truth = float(np.mean(toy_log_density("rings", X_test)))
    est = fit_quietly(
        EBFlowDensity(objective=objective, max_iter=100, random_state=0), X, ConvergenceWarning
    )
    baseline = EBFlowDensity(max_iter=1, random_state=0).fit(X).score(X_test)
    assert est.score(X_test) > truth - 0.1, (est.score(X_test), truth, baseline)
    assert est.score(X_test) > baseline + 0.1, (est.score(X_test), truth, baseline)


def test_default_flow_beats_the_peers_of_bench_quality_on_pinwheel():
    """The win ``bench quality`` measures on pinwheel (3 of 3 seeds), pinned on seed 0."""
    from skebflow.bench._tasks import make_quality_sets

    (pinwheel,) = make_quality_sets(("pinwheel",), n_train=5000)
    train, test, truth = pinwheel.draw(0)
    peers = {name: fit(train, 0) for name, fit in QUALITY_PEERS.items() if name != "NSF"}
    peer_scores = {name: float(np.mean(p.score_samples(test))) for name, p in peers.items()}
    flow = fit_quietly(EBFlowDensity(random_state=0), train, ConvergenceWarning).score(test)
    assert flow <= float(np.mean(truth)) + 0.01
    assert all(flow > score for score in peer_scores.values()), (flow, peer_scores)
