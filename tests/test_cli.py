"""The command line: the demo, files in and out, generated options, and one-line errors.

A few commands run through ``subprocess`` (exit status, stdout/stderr, no traceback); the
rest call ``main`` in-process, which is much faster (each subprocess imports torch).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch

from skebflow import EBFlowDensity
from skebflow.__main__ import _parser, main
from skebflow.cli_io import read_data
from skebflow.cli_options import estimator_params, parameter_docs
from skebflow.estimators.persistence import load

FIT = ["--max-iter", "2"]
MARKUP = ("``", ":class:", ":func:", ":math:", ":mod:", ">>>")


def run_cli(*args: str, cwd: object) -> subprocess.CompletedProcess:
    """Run ``python -m skebflow ARGS`` in ``cwd``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "skebflow", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """The error is the last stderr line, there is one, and no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A folder with the same 200 x 2 data as CSV with and without a header and .npy,
    and a model fitted on them (in-process)."""
    folder = tmp_path_factory.mktemp("cli")
    X = np.random.default_rng(0).uniform(0, 16, size=(200, 2))
    np.savetxt(folder / "header.csv", X, delimiter=",", header="alcohol,malic", comments="")
    np.savetxt(folder / "plain.csv", X, delimiter=",", fmt="%.17g")
    np.save(folder / "data.npy", X)
    np.savetxt(folder / "three.csv", np.ones((5, 3)), delimiter=",")
    (folder / "nan.csv").write_text("1,2\n3,nan\n5,6\n")
    assert main(["fit", str(folder / "plain.csv"), str(folder / "model.joblib"), *FIT]) == 0
    return folder


# ---------------------------------------------------------------------------- demo
def test_demo_smoke_prints_the_default_and_the_peers(tmp_path, capsys):
    argv = ["demo", "--n-samples", "300", "--max-iter", "2", "--objectives", "auto", "dsm"]
    assert main([*argv, "--output", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    for name in ("true density", "EBFlowDensity()", "EBFlowDensity('dsm')", "KernelDensity"):
        assert name in out
    assert "GaussianMixture(" in out and "BIC" in out
    if importlib.util.find_spec("matplotlib") is None:  # the test extra has no matplotlib
        assert "matplotlib is not installed" in captured.err
    else:
        assert (tmp_path / "demo-checkerboard.png").stat().st_size > 0


# ---------------------------------------------------------------------- data files
def test_csv_with_header_fits_through_subprocess(files):
    result = run_cli("fit", "header.csv", "from-header.joblib", *FIT, cwd=files)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "200 rows x 2 columns (header: alcohol, malic)" in result.stderr
    model = load(files / "from-header.joblib")
    assert isinstance(model, EBFlowDensity) and model.n_features_in_ == 2


def test_csv_with_and_without_header_and_npy_read_the_same_numbers(files):
    with_header = read_data(str(files / "header.csv"))
    without = read_data(str(files / "plain.csv"))
    npy = read_data(str(files / "data.npy"))
    assert with_header.columns == ["alcohol", "malic"] and without.columns is None
    np.testing.assert_allclose(with_header.X, npy.X, rtol=1e-15)
    np.testing.assert_array_equal(without.X, npy.X)
    assert read_data(str(files / "plain.csv"), header=True).X.shape == (199, 2)


def test_fit_on_csv_without_header_and_on_npy(files, capsys):
    for name in ("plain.csv", "data.npy"):
        model_path = files / f"from-{name}.joblib"
        assert main(["fit", str(files / name), str(model_path), *FIT]) == 0
        assert load(model_path).n_features_in_ == 2
    assert capsys.readouterr().out == ""


def test_no_header_on_a_header_line_is_a_data_error(files, capsys):
    argv = ["fit", str(files / "header.csv"), str(files / "x.joblib"), "--no-header"]
    assert main(argv) == 1
    assert_one_line_error(capsys.readouterr().err, "line 1, column 1: 'alcohol' is not a number")


def test_nan_in_the_data_is_a_one_line_data_error(files, capsys):
    assert main(["fit", str(files / "nan.csv"), str(files / "x.joblib")]) == 1
    assert_one_line_error(capsys.readouterr().err, "nan.csv, line 2, column 2 is nan")
    assert not (files / "x.joblib").exists()


def test_ragged_and_empty_fields_name_the_line(tmp_path, capsys):
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n")
    (tmp_path / "gap.csv").write_text("1,2\n3,\n")
    assert main(["fit", str(tmp_path / "ragged.csv"), str(tmp_path / "m.joblib")]) == 1
    assert_one_line_error(capsys.readouterr().err, "line 3 has 3 columns, line 2 has 2")
    assert main(["fit", str(tmp_path / "gap.csv"), str(tmp_path / "m.joblib")]) == 1
    assert_one_line_error(capsys.readouterr().err, "line 2, column 2 is empty")


# --------------------------------------------------------------------------- score
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
    saved = np.load(out) if suffix == ".npy" else np.loadtxt(out, ndmin=2)
    expected = load(files / "model.joblib").score_samples(np.load(files / "data.npy"))
    assert saved.shape == (200, 1)
    np.testing.assert_array_equal(saved[:, 0], expected)


def test_wrong_column_count_is_exit_status_1(files, capsys):
    assert main(["score", str(files / "model.joblib"), str(files / "three.csv")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, "three.csv has 3 columns, the model was fitted on 2")


def test_swapped_arguments_say_which_file_is_not_a_model(files):
    result = run_cli("score", "plain.csv", "model.joblib", cwd=files)
    assert result.returncode == 1
    assert_one_line_error(
        result.stderr, "plain.csv is not a model file but a text file", "score MODEL DATA"
    )
    assert "pop from empty list" not in result.stderr


def test_model_given_as_data_and_foreign_joblib_files(files, capsys):
    assert main(["fit", str(files / "model.joblib"), str(files / "x.joblib")]) == 1
    assert_one_line_error(capsys.readouterr().err, "not a CSV text file", "fit DATA MODEL")
    joblib.dump([1, 2], files / "list.joblib")
    joblib.dump(EBFlowDensity(), files / "unfitted.joblib")
    (files / "junk.joblib").write_bytes(b"\x80\x04garbage")
    expected = {
        "list.joblib": "holds a list, not an EBFlowDensity",
        "unfitted.joblib": "holds an EBFlowDensity that is not fitted",
        "junk.joblib": "is not a joblib model file",
    }
    for name, message in expected.items():
        assert main(["score", str(files / name), str(files / "plain.csv")]) == 1
        assert_one_line_error(capsys.readouterr().err, message)


def test_sample_writes_rows_with_the_model_columns(files, capsys):
    out = files / "samples.npy"
    assert main(["sample", str(files / "model.joblib"), str(out), "--n-samples", "7"]) == 0
    assert np.load(out).shape == (7, 2)
    assert "7 samples written" in capsys.readouterr().err


# ------------------------------------------------------------- generated options
def test_every_constructor_parameter_is_an_option_with_plain_help(capsys):
    assert main(["fit", "--help"]) == 0
    text = capsys.readouterr().out
    for name in EBFlowDensity().get_params():
        assert f"--{name.replace('_', '-')} " in text
    for fragment in MARKUP:
        assert fragment not in text
    assert "Adam's initial step size" in text
    docs = parameter_docs(EBFlowDensity.__doc__)
    assert set(docs) == set(EBFlowDensity().get_params())


def test_every_help_text_is_plain(capsys):
    for argv in (["--help"], ["fit", "-h"], ["score", "-h"], ["sample", "-h"], ["demo", "-h"]):
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert text.startswith("usage: python -m skebflow")
        for fragment in MARKUP:
            assert fragment not in text, (argv, fragment)


@pytest.mark.parametrize(
    "bounds",
    [["--bounds", "0", "16"], ["--bounds", "0,16"], ["--bounds=0,16"], ["--bounds", "-0", "16"]],
)
def test_option_values_are_parsed_to_python_values(bounds):
    argv = ["fit", "d.csv", "m.joblib", *bounds, "--n-blocks", "none"]
    argv += ["--early-stopping", "false", "--learning-rate", "1e-3", "--batch-size", "auto"]
    params = estimator_params(_parser().parse_args(argv))
    assert params == {
        "bounds": (0, 16),
        "n_blocks": None,
        "early_stopping": False,
        "learning_rate": 0.001,
        "batch_size": "auto",
        "random_state": 0,
    }


def test_generated_parameters_reach_the_saved_model(files):
    argv = ["fit", str(files / "plain.csv"), str(files / "coupling.joblib"), *FIT]
    argv += ["--n-blocks", "2", "--architecture", "coupling", "--hidden-features", "8"]
    argv += ["--preprocessing", "logit", "--bounds=-1,17", "--seed", "3"]
    assert main(argv) == 0
    params = load(files / "coupling.joblib").get_params()
    assert params["n_blocks"] == 2 and params["architecture"] == "coupling"
    assert params["hidden_features"] == 8 and params["bounds"] == (-1, 17)
    assert params["random_state"] == 3 and params["max_iter"] == 2


# ------------------------------------------------------------ errors, exit status
def test_bad_parameter_value_is_sklearns_message_and_exit_status_2(files):
    result = run_cli("fit", "plain.csv", "x.joblib", "--learning-rate", "-1", cwd=files)
    assert result.returncode == 2
    assert_one_line_error(
        result.stderr, "error: The 'learning_rate' parameter of EBFlowDensity must be"
    )
    assert result.stderr.count("\n") == 1


def test_missing_file_is_exit_status_2(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    assert main(["score", "model.joblib", "nope.csv"]) == 2
    assert capsys.readouterr().err == "error: no such file: nope.csv\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "plain.csv", "x.joblib", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
        (["fit", "plain.csv"], "the following arguments are required: model"),
        (["fit", "plain.csv", "x.joblib", "--max-iter", "x"], "'max_iter' parameter"),
        (["fit", "plain.csv", "no/such/folder/x.joblib"], "folder no/such/folder does not exist"),
        (["fit", "--bounds", "0", "16", "plain.csv", "x.joblib"], "put it after the file names"),
        (["fit", "plain.csv", "x.joblib", "--bounds", "-1,2"], "write --bounds=-1,2"),
        (["sample", "model.joblib", "s.csv", "--n-samples", "0"], "invalid positive integer"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        (["fit", "plain.csv", "./plain.csv"], "writing it would overwrite plain.csv"),
    ],
)
def test_usage_errors_are_one_line_and_exit_status_2(files, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(files)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, message)


def test_estimator_value_errors_are_exit_status_1(files, capsys):
    argv = ["fit", str(files / "plain.csv"), str(files / "x.joblib"), "--bounds", "5", *FIT]
    assert main([*argv, "--preprocessing", "logit"]) == 1
    assert_one_line_error(capsys.readouterr().err, "bounds must be a pair")


def test_debug_shows_the_traceback_before_or_after_the_command(files, capsys):
    result = run_cli("--debug", "score", "plain.csv", "model.joblib", cwd=files)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: plain.csv is not a model")
    assert main(["score", str(files / "plain.csv"), str(files / "model.joblib"), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "WrongKindError" in err
    assert main(["score", str(files / "plain.csv"), str(files / "model.joblib")]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_warnings_are_one_line(files, capsys):
    assert main(["fit", str(files / "plain.csv"), str(files / "x.joblib"), *FIT]) == 0
    err = capsys.readouterr().err
    assert "warning: EBFlowDensity stopped after max_iter=2 epochs" in err
    assert "sklearn/base.py" not in err


class _ClosedPipe:
    """A stdout whose reader has gone (``score ... | head``)."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        raise ValueError("no file descriptor")


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (KeyboardInterrupt(), 130, "error: interrupted"),
        (RuntimeError("boom"), 1, "error: unexpected RuntimeError: boom (rerun with --debug"),
        (TypeError("bad type\nsecond line"), 1, "error: bad type"),
    ],
)
def test_interrupts_and_unexpected_errors_are_one_line(
    files, capsys, monkeypatch, error, status, message
):
    def fail(self, X):
        raise error

    monkeypatch.setattr(EBFlowDensity, "score_samples", fail)
    assert main(["score", str(files / "model.joblib"), str(files / "plain.csv")]) == status
    assert_one_line_error(capsys.readouterr().err, message)


def test_a_closed_stdout_ends_quietly(files, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["score", str(files / "model.joblib"), str(files / "plain.csv")]) == 1
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------ model formats
def test_fit_writes_the_safe_model_format_whatever_the_file_name(files):
    payload = torch.load(files / "model.joblib", weights_only=True)  # plain data and tensors
    assert payload["format"] == "skebflow-model" and payload["class"] == "EBFlowDensity"


def test_joblib_models_still_load_with_a_one_line_note(files, capsys):
    model = load(files / "model.joblib")
    joblib.dump(model, files / "old.joblib")
    out = files / "old-scores.npy"
    argv = ["score", str(files / "old.joblib"), str(files / "data.npy"), "--output", str(out)]
    assert main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "old.joblib is a joblib/pickle model" in notes[0]
    assert "can run any code" in notes[0]
    np.testing.assert_array_equal(
        np.load(out)[:, 0], model.score_samples(np.load(files / "data.npy"))
    )
    assert (
        main(["score", str(files / "model.joblib"), str(files / "data.npy"), "--output", str(out)])
        == 0
    )
    assert "note: " not in capsys.readouterr().err  # the safe format loads without a note


def test_damaged_and_foreign_model_files_are_one_line_errors(files, capsys):
    content = (files / "model.joblib").read_bytes()
    (files / "half.model").write_bytes(content[: len(content) // 2])
    payload = torch.load(files / "model.joblib", weights_only=True)
    torch.save({**payload, "format_version": 99}, files / "future.model")
    torch.save({"weights": torch.ones(2)}, files / "foreign.pt")
    expected = {
        "half.model": "half.model is not a model file (",
        "future.model": "format version 99",
        "foreign.pt": "without the format marker 'skebflow-model'",
    }
    for name, message in expected.items():
        assert main(["score", str(files / name), str(files / "plain.csv")]) == 1
        assert_one_line_error(capsys.readouterr().err, message)
    assert main(["fit", str(files / "model.joblib"), str(files / "x.joblib")]) == 1
    assert_one_line_error(capsys.readouterr().err, "but a skebflow model file (perhaps a model")
