"""One-line errors and warnings, exit statuses, ``--debug``, interrupts and closed pipes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from skebflow import EBFlowDensity
from skebflow.cli import main
from tests.cli.helpers import FIT, assert_one_line_error, run_cli


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
    err = capsys.readouterr().err
    assert "error" not in err and "Traceback" not in err  # silent, as `head` expects


def test_messages_that_used_to_confuse(files, capsys, tmp_path):
    """An empty model file was called a text file; an object .npy was 'not a .npy array
    but a .npy array file'; demo --output onto a file failed only after every fit."""
    (tmp_path / "empty.skebflow").write_bytes(b"")
    assert main(["score", str(tmp_path / "empty.skebflow"), str(files / "plain.csv")]) == 1
    assert_one_line_error(capsys.readouterr().err, "is empty (0 bytes), not a model file")
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object))
    assert main(["fit", str(tmp_path / "objects.npy"), str(tmp_path / "m.skebflow")]) == 1
    assert_one_line_error(capsys.readouterr().err, "a .npy array of Python objects")
    (tmp_path / "taken").write_text("x")
    argv = ["demo", "--output", str(tmp_path / "taken"), "--n-samples", "100"]
    assert main(argv) == 2
    err = capsys.readouterr()
    assert_one_line_error(err.err, "is a file; the demo writes into a folder")
    assert "held-out" not in err.out  # refused before any fit
