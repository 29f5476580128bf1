"""The commands on files: ``score`` prints or writes per-row scores, ``sample`` draws rows."""

from __future__ import annotations

import numpy as np
import pytest

from skebflow import load
from skebflow.cli import main
from tests.cli.helpers import assert_one_line_error, run_cli


def test_score_prints_one_full_precision_score_per_row(files):
    result = run_cli("score", "model.joblib", "header.csv", cwd=files)
    assert result.returncode == 0, result.stderr
    printed = np.array([float(line) for line in result.stdout.splitlines()])
    model = load(files / "model.joblib")
    expected = model.score_samples(np.load(files / "data.npy"))
    assert printed.shape == (200,)
    np.testing.assert_allclose(printed, expected, rtol=1e-12, atol=0)
    assert f"mean log-likelihood per sample: {expected.mean():.6f}" in result.stderr


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_score_output_writes_the_per_row_scores(files, capsys, suffix):
    out = files / f"scores{suffix}"
    assert (
        main(["score", str(files / "model.joblib"), str(files / "data.npy"), "--output", str(out)])
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out == "" and "200 scores written" in captured.err
    saved = np.load(out) if suffix == ".npy" else np.loadtxt(out, ndmin=2, skiprows=1)
    expected = load(files / "model.joblib").score_samples(np.load(files / "data.npy"))
    assert saved.shape == (200, 1)
    np.testing.assert_array_equal(saved[:, 0], expected)


def test_wrong_column_count_is_exit_status_1(files, capsys):
    assert main(["score", str(files / "model.joblib"), str(files / "three.csv")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, "three.csv has 3 columns, the model was fitted on 2")


def test_sample_writes_rows_with_the_model_columns(files, capsys):
    out = files / "samples.npy"
    assert main(["sample", str(files / "model.joblib"), str(out), "--n-samples", "7"]) == 0
    assert np.load(out).shape == (7, 2)
    assert "7 samples written" in capsys.readouterr().err
