"""Smoke tests of ``python -m skebflow bench`` (``--quick``) and of the teacher data.

No timing is asserted: speed is measured by the benchmark, never by tests.
"""

import importlib.util
import itertools
import json
import math

import numpy as np
import pytest
import torch

from skebflow.bench import main
from skebflow.bench_nll import NLL_OBJECTIVES
from skebflow.bench_speed import SPEED_OBJECTIVES
from skebflow.bench_truth import TRUTH_OBJECTIVES, run_truth
from skebflow.teachers import make_teacher, sample_teacher, teacher_log_density


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
    digits = next(s for s in summary if s["group"] == "digits" and s["method"] == "ml")
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
    assert "bits/dim" in markdown


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


# The teacher data of the NLL benchmark (skebflow.teachers.make_teacher and friends).
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
