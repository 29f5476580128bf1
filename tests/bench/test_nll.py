"""``bench nll`` (``--quick``): every objective against ML and the baselines, by group."""

import json
import math

import pytest

from skebflow.bench._cli import main
from skebflow.bench._nll import NLL_OBJECTIVES
from tests.bench.helpers import is_finite_float


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
                assert is_finite_float(row[f"{metric}_mean"])
                assert row[f"{metric}_std"] == 0.0
            else:
                assert row["errors"]
    for task in ("digits-conv", "digits-glow"):  # the image flows: objectives, no baselines
        assert {s["method"] for s in summary if s["task"] == task} == set(NLL_OBJECTIVES)
    ml = {s["task"]: s for s in summary if s["method"] == "ml"}
    assert ml["digits-conv"]["n_ok"] == ml["digits-glow"]["n_ok"] == 1
    digits = next(s for s in summary if s["task"] == "digits" and s["method"] == "ml")
    assert is_finite_float(digits["bits_per_dim_mean"])
    assert digits["bits_per_dim_mean"] == pytest.approx(digits["nll_mean"] / (64 * math.log(2)))
    for run in payload["runs"]:
        assert run["status"] in ("ok", "failed")
        if run["status"] == "ok":
            assert is_finite_float(run["loglik"])
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
