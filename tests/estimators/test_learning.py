"""Slow learning checks (``pytest -m slow``): the estimator against scikit-learn's baselines."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.bench._baselines import QUALITY_PEERS
from skebflow.datasets._toys import make_toy, toy_log_density
from skebflow.exceptions import DivergenceWarning
from tests.helpers import failing_on, fit_quietly

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


#: The issue-23 targets on the 2-D toys: each score-matching objective within this many
#: nats per sample of maximum likelihood on the same data, ...
EACH_WITHIN = 0.25
#: ... and the best of them within this many.
BEST_WITHIN = 0.10
SCORE_MATCHING = ("ssm", "dsm", "fdssm")


def _objective_gaps(toy: str) -> dict[str, float]:
    """ML's held-out log-likelihood minus each score-matching objective's (defaults)."""
    X = make_toy(toy, 2000, random_state=0)
    X_test = make_toy(toy, 5000, random_state=1)
    scores = {}
    for objective in ("ml", *SCORE_MATCHING):
        est = EBFlowDensity(objective=objective, max_iter=100, random_state=0)
        scores[objective] = fit_quietly(est, X, ConvergenceWarning).score(X_test)
    return {o: scores["ml"] - scores[o] for o in SCORE_MATCHING}


def test_score_matching_holds_its_own_on_rings():
    """Every score-matching objective near ML on rings, with no DivergenceWarning.

    Measured (2,000 points): ML −4.259, DSM −4.297, SSM −4.308, FDSSM −4.356.
    """
    with failing_on(DivergenceWarning):
        gaps = _objective_gaps("rings")
    assert max(gaps.values()) < EACH_WITHIN, gaps
    assert min(gaps.values()) < BEST_WITHIN, gaps


@pytest.mark.xfail(
    reason="score matching misses the target on the 8 Gaussians (issue 23): on 2,000 "
    "points DSM is 0.25, FDSSM 0.33 and SSM 0.87 nats below ML, mostly mass between the "
    "modes, where the Fisher divergence sees no data",
    strict=True,
)
def test_score_matching_holds_its_own_on_the_8_gaussians():
    gaps = _objective_gaps("gaussians")
    assert max(gaps.values()) < EACH_WITHIN, gaps
    assert min(gaps.values()) < BEST_WITHIN, gaps


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
