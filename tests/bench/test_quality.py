"""``bench quality`` (``--quick``), its image rows, and its peers (GMM, KDE, zuko's NSF).

No timing is asserted: speed is measured by the benchmark, never by tests.
"""

import importlib.util
import json
import math
import sys

import numpy as np
import pytest
import torch
from scipy import special
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from skebflow import EBFlowDensity
from skebflow.bench._baselines import KDE_BANDWIDTHS, QUALITY_PEERS
from skebflow.bench._cli import main
from skebflow.bench._peers import PeerUnavailableError, fit_nsf, kde_cv_log_likelihoods
from skebflow.bench._quality import DEFAULT_MODELS, run_quality
from skebflow.bench._quality_report import quality_markdown
from skebflow.bench._quality_report import summarize as summarize_quality
from skebflow.bench._tasks import make_quality_sets
from skebflow.datasets._toys import make_toy
from tests.bench.helpers import is_finite_float


def test_quality_quick(tmp_path):
    argv = ["quality", "--quick", "--jobs", "1", "--output", str(tmp_path), "--log", "quiet"]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "quality.json").read_text())
    assert payload["benchmark"] == "quality"
    assert {"cpu_count", "torch_threads", "zuko", "load_average_end"} <= set(payload["machine"])
    summary = {(s["dataset"], s["model"]): s for s in payload["summary"]}
    datasets = {"pinwheel": "toys", "iris": "tables", "mixture-4": "teachers"}
    assert set(summary) == {(d, m) for d in datasets for m in DEFAULT_MODELS}
    for (dataset, model), row in summary.items():
        assert row["group"] == datasets[dataset]
        if model == "NSF" and importlib.util.find_spec("zuko") is None:
            assert row["n_skipped"] == 1 and "zuko" in row["errors"][0]
            continue
        assert row["n_ok"] == 1, row["errors"]
        assert is_finite_float(row["loglik_mean"]) and row["loglik_std"] == 0.0
        assert is_finite_float(row["fit_seconds_mean"])
        if dataset != "iris":
            assert row["excess_mean"] == pytest.approx(row["true_loglik_mean"] - row["loglik_mean"])
        if dataset == "mixture-4":
            assert row["excess_per_dim_mean"] == pytest.approx(row["excess_mean"] / 4)
    for run in payload["runs"]:
        assert run["status"] in ("ok", "skipped")
        assert run["n_test"] > 0 and run["n_train"] > 0
    assert summary["pinwheel", "EBFlow"]["n_iter_mean"] == 2  # --quick: 2 epochs
    markdown = (tmp_path / "quality.md").read_text()
    for title in ("2-D toys", "scikit-learn tables", "Gaussian-mixture teachers", "Excess NLL"):
        assert title in markdown
    assert markdown.count("**") >= 2 * 4  # a winner per row and per excess row


def test_quality_score_rows_and_polish():
    sets = make_quality_sets(("iris",), quick=True)
    models = ("EBFlow-ssm", "EBFlow-ssm+ml", "EBFlow-dsm+ml")
    records = run_quality(sets, models=models, seeds=(0,), quick=True, log=lambda line: None)
    runs = {r["model"]: r for r in records}
    assert set(runs) == set(models)  # EBFlow-dsm is fitted for its polish, not reported
    if runs["EBFlow-ssm"]["status"] == "ok":
        assert runs["EBFlow-ssm+ml"]["n_iter"] == 2 + 1  # 20 % of 2 epochs, at least 1
        assert runs["EBFlow-ssm+ml"]["fit_seconds"] >= runs["EBFlow-ssm"]["fit_seconds"]
    with pytest.raises(ValueError, match="Unknown models"):
        run_quality(sets, models=("EBFlow-sm",), log=lambda line: None)
    with pytest.raises(ValueError, match="Unknown data sets"):
        make_quality_sets(("mnist",))


def test_quality_image_rows_run_on_digits_only(monkeypatch):
    built = []
    fit = EBFlowDensity.fit

    def spy(self, X, y=None):
        built.append((self.architecture, self.image_shape, self.objective, self.bounds))
        return fit(self, X, y)

    monkeypatch.setattr(EBFlowDensity, "fit", spy)
    sets = make_quality_sets(("digits", "iris"), quick=True)
    models = ("EBFlow-conv", "EBFlow-glow-ssm")
    records = run_quality(sets, models=models, seeds=(0,), quick=True, log=lambda line: None)
    runs = {(r["dataset"], r["model"]): r for r in records}
    assert set(runs) == {(d, m) for d in ("digits", "iris") for m in models}
    for model in models:
        assert runs["iris", model]["status"] == "skipped"
        assert "not an image data set" in runs["iris", model]["error"]
    box = (0.0, 17.0)
    assert sorted(built) == [("conv", (1, 8, 8), "auto", box), ("glow", (1, 8, 8), "ssm", box)]
    markdown = quality_markdown(summarize_quality(records), 1)
    assert "bits per dimension" in markdown
    conv = runs["digits", "EBFlow-conv"]
    if conv["status"] == "ok":  # two epochs may leave a finite but poor density
        bits = -conv["loglik"] / (64 * math.log(2.0))
        assert f"{bits:.3f}" in markdown.split("bits per dimension")[1]


def test_gmm_bic_picks_two_components_on_two_clusters():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(300, 2)) - 4.0, rng.normal(size=(300, 2)) + 4.0])
    model = QUALITY_PEERS["GaussianMixture"](X, 0)
    assert model.info["n_components"] == 2
    assert min(model.info["bic"], key=model.info["bic"].get) == 2
    # Scored in the units of X: the standardization's log-Jacobian is added back.
    grid = np.linspace(-12.0, 12.0, 241)
    points = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    mass = np.exp(model.score_samples(points)).sum() * (grid[1] - grid[0]) ** 2
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_kde_cv_criterion_is_gridsearchcv_and_shrinks_with_more_data():
    rng = np.random.default_rng(1)
    fit, held = rng.normal(size=(300, 3)), rng.normal(size=(100, 3))
    bandwidths = np.array([0.01, 0.1, 0.3, 1.0, 3.0])
    ours = kde_cv_log_likelihoods(fit, held, bandwidths, chunk=37)
    sq = np.sum((held[:, None] - fit[None]) ** 2, axis=-1)
    exact = [
        special.logsumexp(-sq / (2 * h**2), axis=1).sum()
        - len(held) * (math.log(len(fit)) + 1.5 * math.log(2 * math.pi * h**2))
        for h in bandwidths
    ]
    np.testing.assert_allclose(ours, exact, rtol=1e-7)
    # scikit-learn's tree loses the far tail at h = 0.01 (0.4 % there); elsewhere equal.
    sklearn_scores = [KernelDensity(bandwidth=h).fit(fit).score(held) for h in bandwidths[1:]]
    np.testing.assert_allclose(ours[1:], sklearn_scores, rtol=1e-6)
    # More data: a smaller bandwidth, in the same (standardized) units.
    kde = QUALITY_PEERS["KernelDensity"]
    small = kde(rng.normal(size=(100, 2)), 0).info["bandwidth"]
    large = kde(rng.normal(size=(5000, 2)), 0).info["bandwidth"]
    assert large < small
    # Both stages choose what GridSearchCV chooses on the same folds and grids.
    X = rng.normal(size=(400, 2))
    chosen = kde(X, 3).info["bandwidth"]
    folds = KFold(3, shuffle=True, random_state=3)
    z = (X - X.mean(axis=0)) / X.std(axis=0)
    coarse = GridSearchCV(KernelDensity(), {"bandwidth": KDE_BANDWIDTHS}, cv=folds).fit(z)
    fine = coarse.best_params_["bandwidth"] * np.logspace(-0.25, 0.25, 7)
    search = GridSearchCV(KernelDensity(), {"bandwidth": fine}, cv=folds).fit(z)
    assert search.best_params_["bandwidth"] == pytest.approx(chosen)


def test_nsf_restores_best_weights_and_is_deterministic():
    pytest.importorskip("zuko")
    X = make_toy("pinwheel", 400, random_state=0)
    options = {"transforms": 2, "hidden_features": (16,), "max_epochs": 8, "patience": 3}
    state = torch.random.get_rng_state()
    model = fit_nsf(X, 0, learning_rate=3e-2, **options)
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator: untouched
    scores = model.validation_scores
    assert 1 <= model.n_epochs <= 8 and scores[model.best_epoch] == max(scores)
    held_out = model.score_samples(X[model.validation_indices])
    assert held_out.mean() == pytest.approx(max(scores), abs=1e-3)
    assert np.isfinite(model.score_samples(X)).all()
    again = fit_nsf(X, 0, learning_rate=3e-2, **options)
    np.testing.assert_allclose(again.score_samples(X[:20]), model.score_samples(X[:20]))


def test_nsf_is_skipped_cleanly_without_zuko(monkeypatch):
    monkeypatch.setitem(sys.modules, "zuko", None)  # `import zuko` raises ImportError
    with pytest.raises(PeerUnavailableError, match="zuko"):
        fit_nsf(np.zeros((10, 2)), 0)
    sets = make_quality_sets(("iris",), quick=True)
    records = run_quality(sets, models=("NSF",), seeds=(0,), quick=True, log=lambda line: None)
    assert [r["status"] for r in records] == ["skipped"]
    assert "zuko" in records[0]["error"]
    assert "skipped" in quality_markdown(summarize_quality(records), 1)
