"""``bench quality`` (``--quick``), its image rows, and its peers (GMM, KDE, zuko's NSF).

No timing is asserted: speed is measured by the benchmark, never by tests.
"""

import importlib.util
import json
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from scipy import special
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from skebflow import EBFlowDensity
from skebflow.bench import _cli, _quality
from skebflow.bench._baselines import KDE_BANDWIDTHS, QUALITY_PEERS
from skebflow.bench._cli import main
from skebflow.bench._peers import PeerUnavailableError, fit_nsf, kde_cv_log_likelihoods
from skebflow.bench._quality import (
    DEFAULT_MODELS,
    OBJECTIVE_MODELS,
    expanded_box,
    grid_integral,
    ml_reference,
    run_quality,
)
from skebflow.bench._quality_report import quality_markdown
from skebflow.bench._quality_report import summarize as summarize_quality
from skebflow.bench._tasks import make_quality_sets
from skebflow.datasets._toys import make_toy
from skebflow.exceptions import DivergenceWarning
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
        assert run["floating_point_error"] is False
        if run["model"] == "EBFlow":
            assert run["ml_reference"] == "EBFlow" and isinstance(run["diverged"], bool)
            assert "gap_to_ml" not in run  # the reference itself
        if run["dataset"] == "pinwheel" and run["status"] == "ok":  # 2-D: the grid integral
            assert 0.0 < run["grid_integral"] < 1.0 + 1e-3, run["model"]
        else:
            assert "grid_integral" not in run
    assert summary["pinwheel", "GaussianMixture"]["grid_integral_mean"] == pytest.approx(
        1, abs=0.01
    )
    assert payload["config"]["grid_integral"]["points_per_axis"] == 300
    assert summary["pinwheel", "EBFlow"]["n_iter_mean"] == 2  # --quick: 2 epochs
    markdown = (tmp_path / "quality.md").read_text()
    for title in ("2-D toys", "scikit-learn tables", "Gaussian-mixture teachers", "Excess NLL"):
        assert title in markdown
    assert "Mass of the fitted density" in markdown
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


# ------------------------------------------------------------- score matching against ML
def gaussian_log_density(X):
    return -0.5 * np.sum(X**2, axis=1) - math.log(2 * math.pi)


def test_grid_integral_of_densities_inside_and_outside_the_box():
    wide = ([-8.0, -8.0], [8.0, 8.0])
    assert grid_integral(gaussian_log_density, *wide) == pytest.approx(1.0, abs=1e-3)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 2)) * [1.0, 0.5] + [3.0, -1.0]
    gmm = GaussianMixture(2, random_state=0).fit(X)
    assert grid_integral(gmm.score_samples, [-7.0, -11.0], [13.0, 9.0]) == pytest.approx(
        1.0, abs=1e-3
    )
    # Mass far outside the box: well below 1 (here all of it); half of it: 0.5.
    far = grid_integral(lambda x: gaussian_log_density(x - 20.0), *wide)
    assert far < 1e-6
    half = grid_integral(gaussian_log_density, [0.0, -8.0], [8.0, 8.0])
    assert half == pytest.approx(0.5, abs=1e-3)
    # A uniform density on the box: exact on any grid; zero density (-inf) is fine.
    assert grid_integral(lambda x: np.full(len(x), -math.log(6.0)), [0, 0], [2, 3], n=7) == (
        pytest.approx(1.0)
    )
    assert grid_integral(lambda x: np.full(len(x), -np.inf), *wide, n=5) == 0.0
    with pytest.raises(FloatingPointError, match="1 of 25 grid log-densities"):
        grid_integral(lambda x: np.where(x.min(axis=1) > 6, np.nan, 0.0), *wide, n=5)
    low, high = expanded_box(X)
    np.testing.assert_allclose((low + high) / 2, (X.min(0) + X.max(0)) / 2)
    np.testing.assert_allclose(high - low, 1.5 * (X.max(0) - X.min(0)))


class _Fixed:
    """A model whose log-density is one number everywhere."""

    def __init__(self, value):
        self.value, self.n_iter_ = value, 1

    def score_samples(self, X):
        return np.full(len(X), self.value)


_FIXED = {None: -2.0, "ssm": -2.5, "dsm": -3.0, "fdssm": -4.0}


def _fake_ebflow(objective, train, seed, quick):
    if objective == "ssm":
        warnings.warn("not about divergence", UserWarning, stacklevel=1)
    if objective == "dsm":
        warnings.warn("far off the data", DivergenceWarning, stacklevel=1)
    if objective == "fdssm" and seed == 1:
        raise FloatingPointError("the loss became nan")
    return _Fixed(_FIXED[objective])


def _fake_records(monkeypatch):
    monkeypatch.setattr(_quality, "_ebflow", _fake_ebflow)
    monkeypatch.setattr(_quality, "_polish", lambda model, train: _Fixed(model.value + 0.4))
    sets = make_quality_sets(("rings", "iris"), quick=True)
    models = (*OBJECTIVE_MODELS, "EBFlow-dsm+ml")
    with pytest.warns(UserWarning) as seen:
        records = run_quality(sets, models=models, seeds=(0, 1), log=lambda line: None)
    # The other warnings are passed on (one per seed and set); DivergenceWarning is recorded.
    assert [str(w.message) for w in seen] == ["not about divergence"] * 4
    return sets, records


def test_quality_records_gap_to_ml_divergence_and_grid_mass(monkeypatch):
    sets, records = _fake_records(monkeypatch)
    runs = {(r["dataset"], r["model"], r["seed"]): r for r in records}
    assert len(runs) == 2 * 5 * 2
    for (_, model, seed), run in runs.items():
        assert run["ml_reference"] == "EBFlow"
        assert run["diverged"] == model.startswith("EBFlow-dsm")  # the +ml row: its first fit
        failed = model == "EBFlow-fdssm" and seed == 1
        assert run["floating_point_error"] == failed
        assert run["status"] == ("failed" if failed else "ok")
        if model == "EBFlow" or failed:
            assert "gap_to_ml" not in run
            continue
        value = _FIXED[model.removeprefix("EBFlow-").removesuffix("+ml")]
        gap = value + (0.4 if model.endswith("+ml") else 0.0) - _FIXED[None]
        assert run["gap_to_ml"] == pytest.approx(gap)
        assert run["gap_to_ml_per_dim"] == pytest.approx(gap / run["features"])
        assert run["nll_gap_to_ml_percent"] == pytest.approx(100 * -gap / 2.0)
    dsm = runs["rings", "EBFlow-dsm", 0]
    assert dsm["divergence_warnings"] == ["far off the data"]
    assert runs["rings", "EBFlow-dsm+ml", 1]["divergence_warnings"] == ["far off the data"]
    # The grid integral on the 2-D set only: exp(value) times the area of the box.
    train = sets[0].draw(1)[0]
    area = np.prod(np.subtract(*expanded_box(train)[::-1]))
    assert runs["rings", "EBFlow-ssm", 1]["grid_integral"] == pytest.approx(math.exp(-2.5) * area)
    assert all("grid_integral" not in r for r in records if r["dataset"] == "iris")


def test_quality_report_shows_objectives_against_ml(monkeypatch):
    _, records = _fake_records(monkeypatch)
    summary = summarize_quality(records)
    rows = {(s["dataset"], s["model"]): s for s in summary}
    fdssm = rows["iris", "EBFlow-fdssm"]
    assert (fdssm["n_ok"], fdssm["n_floating_point_error"], fdssm["n_diverged"]) == (1, 1, 0)
    assert fdssm["gap_to_ml_by_seed"] == {"0": pytest.approx(-2.0)}
    dsm = rows["iris", "EBFlow-dsm"]
    assert dsm["n_diverged"] == 2 and dsm["gap_to_ml_mean"] == pytest.approx(-1.0)
    assert dsm["gap_to_ml_std"] == 0.0 and dsm["nll_gap_to_ml_percent_mean"] == pytest.approx(50)
    assert rows["rings", "EBFlow"]["ml_reference"] == "EBFlow"
    assert "grid_integral_mean" in rows["rings", "EBFlow"]
    assert "grid_integral_mean" not in rows["iris", "EBFlow"]
    markdown = quality_markdown(summary, 2)
    assert markdown.count("Objectives against maximum likelihood") == 2  # toys and tables
    assert markdown.count("Mass of the fitted density") == 1  # the toys only
    assert "| iris | EBFlow | ML (the reference) |  |  | 0/2 | 0/2 |" in markdown
    assert "| iris | EBFlow-ssm | -0.500 ± 0.000 | -0.1250 ± 0.0000 | +25.0 % ± 0.0 % |" in markdown
    assert (
        "| iris | EBFlow-dsm | -1.000 ± 0.000 | -0.2500 ± 0.0000 | +50.0 % ± 0.0 % | 2/2 | 0/2 |"
        in (markdown)
    )
    assert "| iris | EBFlow-fdssm | -2.000 (1 of 2 seeds) | -0.5000 | +100.0 % | 0/2 | 1/2 |" in (
        markdown
    )
    # A run without any compared or failing EBFlow row adds no such table.
    plain = [r for r in records if r["model"] == "EBFlow"]
    assert "Objectives against" not in quality_markdown(summarize_quality(plain), 2)


def test_ml_reference_of_every_row():
    assert {ml_reference(m) for m in _quality.EBFLOW_MODELS} == {"EBFlow"}
    assert [ml_reference(m) for m in _quality.IMAGE_MODELS] == ["EBFlow-conv"] * 3 + [
        "EBFlow-glow"
    ] * 3


def test_models_objectives_selects_ml_and_the_score_objectives(monkeypatch, tmp_path):
    asked = []

    def fake_run(sets, *, models, **kwargs):
        asked.append(models)
        return []

    monkeypatch.setattr(_cli, "run_quality", fake_run)
    argv = ["quality", "--quick", "--models", "objectives", "--datasets", "iris"]
    assert main([*argv, "--output", str(tmp_path), "--log", "quiet"]) == 0
    assert asked == [("EBFlow", "EBFlow-ssm", "EBFlow-dsm", "EBFlow-fdssm")]
