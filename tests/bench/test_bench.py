"""Smoke tests of ``python -m skebflow bench`` (``--quick``), its peers and the teacher data.

No timing is asserted: speed is measured by the benchmark, never by tests.
"""

import importlib.util
import itertools
import json
import math
import sys

import numpy as np
import pytest
import torch
from scipy import special, stats
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from skebflow import EBFlowDensity
from skebflow.bench._baselines import KDE_BANDWIDTHS, QUALITY_PEERS
from skebflow.bench._cli import main
from skebflow.bench._inference import measure_memory
from skebflow.bench._nll import NLL_OBJECTIVES
from skebflow.bench._peers import PeerUnavailableError, fit_nsf, kde_cv_log_likelihoods
from skebflow.bench._quality import DEFAULT_MODELS, run_quality
from skebflow.bench._quality_report import quality_markdown
from skebflow.bench._quality_report import summarize as summarize_quality
from skebflow.bench._speed import IMAGE_SPEED_OBJECTIVES, SPEED_OBJECTIVES, run_speed
from skebflow.bench._tasks import make_quality_sets
from skebflow.bench._truth import TRUTH_OBJECTIVES, run_truth
from skebflow.datasets._teachers import (
    make_mixture_teacher,
    make_teacher,
    mixture_teacher_log_density,
    sample_mixture_teacher,
    sample_teacher,
    teacher_log_density,
)
from skebflow.datasets._toys import make_toy


def _finite(value):
    return isinstance(value, float) and math.isfinite(value)


def test_speed_quick(tmp_path):
    assert main(["speed", "--quick", "--output", str(tmp_path), "--log", "quiet"]) == 0
    payload = json.loads((tmp_path / "speed.json").read_text())
    assert payload["benchmark"] == "speed"
    assert {"cpu_count", "torch_threads", "device", "torch"} <= set(payload["machine"])
    records = payload["results"]
    dims = payload["config"]["features"]
    assert {(r["features"], r["objective"]) for r in records} == {
        (d, name) for d in dims for name in SPEED_OBJECTIVES
    }
    for record in records:
        keys = {"median_ms", "q25_ms", "q75_ms", "ratio_to_ml", "speedup_vs_ml", "ratio_to_floor"}
        assert keys <= set(record)
        if record["objective"] in ("floor", "ml"):
            assert record["error"] is None
        if record["error"] is None:
            assert record["n_timed"] >= 1
            assert all(_finite(record[key]) and record[key] > 0 for key in keys)
    markdown = (tmp_path / "speed.md").read_text()
    assert "| objective | ms/step (median) |" in markdown
    for d in dims:
        assert f"### D = {d}" in markdown
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "speed.png").stat().st_size > 0


def test_nll_quick(tmp_path):
    assert main(["nll", "--quick", "--output", str(tmp_path), "--log", "quiet"]) == 0
    payload = json.loads((tmp_path / "nll.json").read_text())
    assert payload["benchmark"] == "nll"
    summary = payload["summary"]
    methods = (*NLL_OBJECTIVES, "KernelDensity", "GaussianMixture")
    inside = ("ssm-inside", "dsm-inside", "fdssm-inside")  # the MaP ablation
    groups = {"teacher": "excess_per_dim", "toys": "excess", "digits": "nll"}
    groups["bounded"] = "excess_per_dim"
    for group, metric in groups.items():
        rows = {s["method"]: s for s in summary if s["group"] == group}
        expected = set(methods)
        if group in ("digits", "bounded"):
            expected |= set(inside)
        if group in ("teacher", "digits"):  # + a short ML polish; - the barrier
            for objective in ("ssm", "dsm", "fdssm"):
                expected |= {f"{objective}+ml", f"{objective}-sv", f"{objective}-sv+ml"}
        assert set(rows) == expected
        for method in ("ml", "KernelDensity", "GaussianMixture"):
            assert rows[method]["n_ok"] == 1
        for row in rows.values():
            assert row["n_ok"] + row["n_failed"] == 1
            if row["n_ok"]:
                assert _finite(row[f"{metric}_mean"])
                assert row[f"{metric}_std"] == 0.0
            else:
                assert row["errors"]
    for task in ("digits-conv", "digits-glow"):  # the image flows: objectives, no baselines
        assert {s["method"] for s in summary if s["task"] == task} == set(NLL_OBJECTIVES)
    ml = {s["task"]: s for s in summary if s["method"] == "ml"}
    assert ml["digits-conv"]["n_ok"] == ml["digits-glow"]["n_ok"] == 1
    digits = next(s for s in summary if s["task"] == "digits" and s["method"] == "ml")
    assert _finite(digits["bits_per_dim_mean"])
    assert digits["bits_per_dim_mean"] == pytest.approx(digits["nll_mean"] / (64 * math.log(2)))
    for run in payload["runs"]:
        assert run["status"] in ("ok", "failed")
        if run["status"] == "ok":
            assert _finite(run["loglik"])
    polished = {r["method"]: r for r in payload["runs"] if r["task"] == "digits"}
    if polished["ssm"]["status"] == "ok":
        assert polished["ssm+ml"]["n_iter"] > polished["ssm"]["n_iter"]
        assert polished["ssm+ml"]["fit_seconds"] >= polished["ssm"]["fit_seconds"]
    markdown = (tmp_path / "nll.md").read_text()
    for group in groups:
        assert f"### {group}:" in markdown
    assert "bits/dim, digits-glow" in markdown


def test_nll_tasks_option_keeps_the_named_tasks(tmp_path):
    argv = ["nll", "--quick", "--datasets", "digits", "--tasks", "digits-conv"]
    argv += ["--objectives", "ml", "--output", str(tmp_path), "--log", "quiet"]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "nll.json").read_text())
    assert {(r["task"], r["method"]) for r in payload["runs"]} == {("digits-conv", "ml")}
    assert payload["config"]["tasks"][0]["params"]["architecture"] == "conv"
    with pytest.raises(SystemExit, match="unknown tasks \\['digits-maf'\\]"):
        main(["nll", "--quick", "--datasets", "digits", "--tasks", "digits-maf"])


def test_inference_quick(tmp_path):
    assert main(["inference", "--quick", "--output", str(tmp_path), "--log", "quiet"]) == 0
    payload = json.loads((tmp_path / "inference.json").read_text())
    jobs = {(r["features"], r["model"], r["method"]) for r in payload["throughput"]}
    for d in (2, 8):
        assert (d, "EBFlow", "score_gradient") in jobs
        for model, method in itertools.product(
            ("EBFlow", "GMM", "KDE"), ("score_samples", "sample")
        ):
            assert (d, model, method) in jobs
    assert all(r["rows_per_s"] > 0 for r in payload["throughput"])
    memory = {(r["model"], r["method"]): r for r in payload["memory"]}
    assert memory["EBFlow", "sample"]["output_mb"] == pytest.approx(20_000 * 8 * 8 / 2**20)
    assert "| EBFlow | score_gradient |" in (tmp_path / "inference.md").read_text()


@pytest.mark.slow
def test_inference_memory_does_not_grow_with_the_rows():
    # Ten times the rows: the result grows tenfold, the rest of the peak stays a few
    # batches' worth (one batch of the old unbatched path was the whole input, ~10x it).
    methods = (("EBFlow", "score_samples"), ("EBFlow", "sample"))
    small, large = (
        measure_memory(methods, n_rows=n, features=16, log=lambda _: None)
        for n in (40_000, 400_000)
    )
    for a, b in zip(small, large, strict=True):
        assert b["output_mb"] == pytest.approx(10 * a["output_mb"])
        overhead = b["extra_peak_mb"] - b["output_mb"]
        assert overhead < 2 * a["extra_peak_mb"] + 16, (a, b)


def test_speed_times_the_paper_cnn_on_images(tmp_path):
    records = run_speed(
        [], image_shapes=((1, 4, 4),), repeats=1, steps_per_round=1, warmup=1, log=lambda _: None
    )
    assert [r["objective"] for r in records] == list(IMAGE_SPEED_OBJECTIVES)
    for r in records:
        assert r["architecture"] == "conv" and r["image_shape"] == (1, 4, 4)
        assert r["features"] == 16 and r["error"] is None and r["median_ms"] > 0
    with pytest.raises(SystemExit):
        main(["speed", "--images", "28x28", "--output", str(tmp_path), "--log", "quiet"])


def test_truth_quick(tmp_path):
    assert main(["truth", "--quick", "--output", str(tmp_path), "--log", "quiet"]) == 0
    payload = json.loads((tmp_path / "truth.json").read_text())
    records = payload["results"]
    for name in TRUTH_OBJECTIVES:
        rows = [r for r in records if r["objective"] == name]
        assert [r["iteration"] for r in rows] == [0, 2, 4]
        # Started at the truth: no excess; L-BFGS with a Wolfe line search only goes down.
        assert abs(rows[0]["excess_per_dim"]) < 1e-6
        losses = [r["loss"] for r in rows]
        assert all(b <= a + 1e-6 for a, b in itertools.pairwise(losses))
        assert all(_finite(r["excess_per_dim"]) for r in rows)
    assert "| iteration |" in (tmp_path / "truth.md").read_text()


def test_maximum_likelihood_from_the_truth_finds_a_better_training_fit():
    # The MLE fits its own sample better than the truth does (by about k / (2n) nats),
    # and is then worse on fresh data: the statistical floor in miniature.
    records = run_truth(
        features=3,
        n_train=300,
        n_test=4000,
        objectives=("ml",),
        iterations=60,
        report_every=60,
        dtype=torch.float64,
        log=lambda line: None,
    )
    start, end = records[0], records[-1]
    k = 2 * (3 * 3 + 3)
    assert start["loss"] - end["loss"] > 0.25 * k / (2 * 300) / 3
    assert end["excess_per_dim"] > 0


def test_truth_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Unknown objectives"):
        run_truth(objectives=("ssm",), log=lambda line: None)
    with pytest.raises(ValueError, match="iterations"):
        run_truth(iterations=0, log=lambda line: None)


def test_bench_rejects_unknown_subcommand():
    with pytest.raises(SystemExit):
        main(["nothing"])


# The teacher data of the NLL benchmark (skebflow.datasets._teachers.make_teacher and friends).
def test_teacher_is_deterministic_and_leaves_global_rng_alone():
    state = np.random.get_state()  # noqa: NPY002 (checking that it is left alone)
    a = sample_teacher(make_teacher(3, random_state=0), 20, random_state=1)
    b = sample_teacher(make_teacher(3, random_state=0), 20, random_state=1)
    c = sample_teacher(make_teacher(3, random_state=0), 20, random_state=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (20, 3) and a.dtype == np.float64
    after = np.random.get_state()  # noqa: NPY002
    np.testing.assert_array_equal(state[1], after[1])


def test_teacher_density_is_normalized_in_2d():
    teacher = make_teacher(2, random_state=3)
    samples = sample_teacher(teacher, 20_000, random_state=0)
    low, high = samples.min(0) - 4.0, samples.max(0) + 4.0
    step = (high - low) / 400
    axes = [low[k] + step[k] * (np.arange(400) + 0.5) for k in range(2)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    mass = np.exp(teacher_log_density(teacher, grid)).sum() * step.prod()
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_teacher_samples_follow_its_density():
    # The mean log-density of its own samples is the negative entropy; a histogram of
    # the samples along the first axis matches the marginal of the density.
    teacher = make_teacher(1, random_state=5)
    samples = sample_teacher(teacher, 50_000, random_state=0)[:, 0]
    edges = np.quantile(samples, np.linspace(0.0, 1.0, 11))
    fine = np.linspace(edges[0], edges[-1], 20_001)
    density = np.exp(teacher_log_density(teacher, fine[:, None]))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    predicted = np.diff(np.interp(edges, fine, cdf))
    np.testing.assert_allclose(predicted, 0.1, atol=0.01)


def test_teacher_rejects_bad_input():
    with pytest.raises(ValueError, match="n_features"):
        make_teacher(0)
    teacher = make_teacher(2, random_state=0)
    with pytest.raises(ValueError, match="n_samples"):
        sample_teacher(teacher, 0)
    with pytest.raises(ValueError, match="shape"):
        teacher_log_density(teacher, np.zeros((3, 5)))


# The mixture teachers of `bench quality`.
def test_mixture_teacher_matches_scipy():
    teacher = make_mixture_teacher(5, n_components=3, random_state=0)
    X = np.concatenate(
        [
            sample_mixture_teacher(teacher, 50, random_state=1),
            np.random.default_rng(2).normal(scale=10.0, size=(20, 5)),  # far from the modes
        ]
    )
    terms = [
        np.log(w) + stats.multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(teacher.weights, teacher.means, teacher.covariances, strict=True)
    ]
    expected = special.logsumexp(terms, axis=0)
    np.testing.assert_allclose(mixture_teacher_log_density(teacher, X), expected, rtol=1e-9)
    far = mixture_teacher_log_density(teacher, np.full((1, 5), 1e4))
    assert np.isfinite(far).all() and far[0] < -1e5


def test_mixture_teacher_samples_have_the_mixture_moments():
    teacher = make_mixture_teacher(3, random_state=4)
    X = sample_mixture_teacher(teacher, 200_000, random_state=0)
    w, m = teacher.weights, teacher.means
    mean = w @ m
    cov = np.einsum("k,kij->ij", w, teacher.covariances) + np.einsum("k,ki,kj->ij", w, m, m)
    cov -= np.outer(mean, mean)
    np.testing.assert_allclose(X.mean(axis=0), mean, atol=0.01)
    np.testing.assert_allclose(np.cov(X.T), cov, atol=0.02)


def test_mixture_teacher_is_well_posed_and_deterministic():
    state = np.random.get_state()  # noqa: NPY002
    teacher = make_mixture_teacher(16, random_state=7)
    again = make_mixture_teacher(16, random_state=7)
    np.testing.assert_array_equal(teacher.covariances, again.covariances)
    assert teacher.weights.sum() == pytest.approx(1.0) and (teacher.weights > 0).all()
    assert (np.linalg.eigvalsh(teacher.covariances) > 0.04).all()
    gaps = [np.linalg.norm(a - b) for a, b in itertools.combinations(teacher.means, 2)]
    assert 1.0 < np.median(gaps) < 4.0  # about `separation` = 2.5 apart: overlapping
    with pytest.raises(ValueError, match="read-only"):
        teacher.means[0, 0] = 1.0
    np.testing.assert_array_equal(state[1], np.random.get_state()[1])  # noqa: NPY002
    with pytest.raises(ValueError, match="n_features"):
        make_mixture_teacher(0)
    with pytest.raises(ValueError, match="shape"):
        mixture_teacher_log_density(teacher, np.zeros((2, 3)))


# `bench quality`: the smoke run and its peers.
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
        assert _finite(row["loglik_mean"]) and row["loglik_std"] == 0.0
        assert _finite(row["fit_seconds_mean"])
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
