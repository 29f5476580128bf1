"""Files of the command line: data tables (CSV, header detection, .npy) and model files."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from skebflow import EBFlowDensity, load
from skebflow.cli import main
from skebflow.cli._io import read_data
from tests.cli.helpers import FIT, assert_one_line_error, run_cli


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
        argv = ["score", str(files / name), str(files / "plain.csv"), "--trust-pickle"]
        assert main(argv) == 1
        assert_one_line_error(capsys.readouterr().err, message)


def test_fit_writes_the_safe_model_format_whatever_the_file_name(files):
    payload = torch.load(files / "model.joblib", weights_only=True)  # plain data and tensors
    assert payload["format"] == "skebflow-model" and payload["class"] == "EBFlowDensity"


class _WritesMarker:
    """Unpickling this writes a marker file: the code a crafted pickle would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "ran"))


@pytest.mark.parametrize("command", ["score", "sample"])
def test_pickle_files_are_refused_unread_without_trust_pickle(files, capsys, command):
    marker = files / f"marker-{command}"
    joblib.dump(_WritesMarker(marker), files / "crafted.joblib")
    joblib.dump(load(files / "model.joblib"), files / "genuine.joblib")
    other = str(files / "plain.csv") if command == "score" else str(files / "out.csv")
    for name in ("crafted.joblib", "genuine.joblib"):
        assert main([command, str(files / name), other]) == 1
        assert_one_line_error(
            capsys.readouterr().err, "is a joblib/pickle file", "not loaded", "--trust-pickle"
        )
    assert not marker.exists()


def test_joblib_models_load_with_trust_pickle_and_a_one_line_note(files, capsys):
    model = load(files / "model.joblib")
    joblib.dump(model, files / "old.joblib")
    out = files / "old-scores.npy"
    argv = ["score", str(files / "old.joblib"), str(files / "data.npy"), "--output", str(out)]
    assert main([*argv, "--trust-pickle"]) == 0
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
        argv = ["score", str(files / name), str(files / "plain.csv"), "--trust-pickle"]
        assert main(argv) == 1
        assert_one_line_error(capsys.readouterr().err, message)
    assert main(["fit", str(files / "model.joblib"), str(files / "x.joblib")]) == 1
    assert_one_line_error(capsys.readouterr().err, "but a skebflow model file (perhaps a model")


def test_columns_are_matched_by_header_name(tmp_path, capsys):
    """The same columns in another order scored a mean of -1,152,564 instead of -15.4,
    exit 0: columns were matched by position. Now by name, with an id column dropped."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2)) * [1.0, 5.0] + [0.0, 10.0]
    ids = np.arange(300.0)[:, None]
    np.savetxt(tmp_path / "fit.csv", np.hstack([X, ids]), delimiter=",",
               header="alcohol,malic,id", comments="")  # fmt: skip
    np.savetxt(tmp_path / "reordered.csv", np.hstack([ids, X[:, ::-1]]), delimiter=",",
               header="id,malic,alcohol", comments="")  # fmt: skip
    np.savetxt(tmp_path / "missing.csv", X[:, :1], delimiter=",", header="alcohol", comments="")
    model = str(tmp_path / "model.skebflow")
    assert main(["fit", str(tmp_path / "fit.csv"), model, "--drop", "id", *FIT]) == 0
    assert list(load(model).feature_names_in_) == ["alcohol", "malic"]
    same, other = tmp_path / "same.npy", tmp_path / "other.npy"
    argv = ["score", model, str(tmp_path / "fit.csv"), "--drop", "id", "--output", str(same)]
    assert main(argv) == 0
    argv = ["score", model, str(tmp_path / "reordered.csv"), "--drop", "id"]
    assert main([*argv, "--output", str(other)]) == 0
    assert "matched to the model's by name" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(same), np.load(other))
    assert main(["score", model, str(tmp_path / "reordered.csv"), "--id", "none"]) == 1
    assert_one_line_error(capsys.readouterr().err, "has column(s) ['id'] the model was not")
    assert main(["score", model, str(tmp_path / "missing.csv")]) == 1
    assert_one_line_error(capsys.readouterr().err, "lacks the model's column(s) ['malic']")
    assert main(["fit", str(tmp_path / "missing.csv"), model, "--drop", "colour"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--drop colour: no such column")


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_a_pipe_is_read_once_and_every_row_is_scored(files, tmp_path, name):
    """`cat big.csv | ... score m /dev/stdin` printed 2,679 scores for 3,000 rows (the file
    was opened four times); `-` was taken as a file name."""
    X = np.random.default_rng(1).uniform(0, 16, size=(3000, 2))
    text = "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in X)
    command = [sys.executable, "-m", "skebflow", "score", str(files / "model.joblib"), name]
    result = subprocess.run(command, input=text, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scores = np.array(result.stdout.split(), dtype=float)
    assert len(scores) == 3000
    np.testing.assert_allclose(scores, load(files / "model.joblib").score_samples(X), rtol=1e-12)


def test_output_csvs_have_a_header_and_dash_is_standard_output(files, tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    argv = ["score", str(files / "model.joblib"), str(files / "plain.csv")]
    assert main([*argv, "--output", str(scores)]) == 0
    assert scores.read_text().splitlines()[0] == "log_density"
    capsys.readouterr()
    assert main(["sample", str(files / "model.joblib"), "-", "--n-samples", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(len(line.split(",")) == 2 for line in out)


def test_real_exports_tsv_parquet_decimal_commas_and_empty_cells(tmp_path, capsys):
    """Read by pandas (the `tables` extra, installed for the tests): a parquet file keeps
    its column names, a TSV and a ';'-separated file with decimal commas score the same
    rows, and an empty cell names EBFlowImputer."""
    import pandas as pd

    X = np.random.default_rng(0).normal(size=(200, 2))
    pd.DataFrame(X, columns=["a", "b"]).to_parquet(tmp_path / "fit.parquet")
    model = str(tmp_path / "model.skebflow")
    assert main(["fit", str(tmp_path / "fit.parquet"), model, *FIT]) == 0
    assert list(load(model).feature_names_in_) == ["a", "b"]
    rows = X[:3].tolist()
    (tmp_path / "rows.tsv").write_text("a\tb\n" + "".join(f"{p!r}\t{q!r}\n" for p, q in rows))
    european = "".join(f"{p!r};{q!r}\n".replace(".", ",") for p, q in rows)
    (tmp_path / "rows.csv").write_text("a;b\n" + european)
    capsys.readouterr()
    expected = load(model).score_samples(pd.DataFrame(rows, columns=["a", "b"]))
    for argv in (["rows.tsv"], ["rows.csv", "--sep", ";", "--decimal", ","]):
        assert main(["score", model, str(tmp_path / argv[0]), *argv[1:]]) == 0
        scores = np.array(capsys.readouterr().out.split(), dtype=float)
        np.testing.assert_allclose(scores, expected, rtol=1e-12)
    (tmp_path / "gaps.csv").write_text("a,b\n1,\n2,3\n")
    assert main(["score", model, str(tmp_path / "gaps.csv")]) == 1
    assert_one_line_error(capsys.readouterr().err, "is empty", "EBFlowImputer")


def test_id_columns_are_row_labels_written_beside_the_scores(tmp_path, capsys):
    """An id column is not a feature: a header column named like an id (or --id NAME, or
    a number without a header) is kept apart as text and written beside the scores;
    --columns picks features by name, or by number without a header."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    lines = [f"P{i},{a!r},{b!r},{i % 2}\n" for i, (a, b) in enumerate(X.tolist())]
    (tmp_path / "fit.csv").write_text("patient_id,a,b,label\n" + "".join(lines))
    model = str(tmp_path / "model.skebflow")
    assert main(["fit", str(tmp_path / "fit.csv"), model, "--drop", "label", *FIT]) == 0
    assert "id column 'patient_id', not a feature" in capsys.readouterr().err
    assert list(load(model).feature_names_in_) == ["a", "b"]
    with warnings.catch_warnings():  # plain rows, in the model's order
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        expected = load(model).score_samples(X)
    # a pandas export: a blank-named index column, the columns in another order
    index = "".join(f"{i},{b!r},{a!r}\n" for i, (a, b) in enumerate(X[:5].tolist()))
    (tmp_path / "new.csv").write_text(",b,a\n" + index)
    assert main(["score", model, str(tmp_path / "new.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "id,log_density" and [line.split(",")[0] for line in out[1:]] == list("01234")
    np.testing.assert_allclose([float(line.split(",")[1]) for line in out[1:]], expected[:5])
    scores = tmp_path / "scores.csv"
    argv = ["score", model, str(tmp_path / "fit.csv"), "--columns", "a", "b"]
    assert main([*argv, "--output", str(scores)]) == 0
    rows = scores.read_text().splitlines()
    assert rows[0] == "patient_id,log_density" and rows[1].startswith("P0,")
    np.testing.assert_allclose([float(r.split(",")[1]) for r in rows[1:]], expected, rtol=1e-12)
    # without a header: columns and the id by number
    plain = "".join(f"{a!r},7{i},{b!r}\n" for i, (a, b) in enumerate(X[:3].tolist()))
    (tmp_path / "plain.csv").write_text(plain)
    assert main(["score", model, str(tmp_path / "plain.csv"), "--id", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in out[1:]] == ["70", "71", "72"]
    assert main(["score", model, str(tmp_path / "plain.csv"), "--columns", "1", "3"]) == 0
    np.testing.assert_allclose(np.array(capsys.readouterr().out.split(), float), expected[:3])
    # mistakes name the option and the file
    cases = {
        ("--id", "none", "--drop", "label"): (1, "'P0' is not a number"),
        ("--id", "colour"): (2, "--id colour: "),
        ("--columns", "a", "colour"): (2, "--columns colour: no such column"),
        ("--columns", "a", "--drop", "b"): (2, "not allowed with argument"),
    }
    for options, (status, message) in cases.items():
        assert main(["score", model, str(tmp_path / "fit.csv"), *options]) == status
        assert_one_line_error(capsys.readouterr().err, message)
    assert main(["score", model, str(tmp_path / "plain.csv"), "--columns", "4"]) == 2
    assert_one_line_error(capsys.readouterr().err, "column numbers 1 to 3")


def test_id_column_edge_cases_found_in_review(tmp_path, capsys):
    """Two id-like names are a usage error; a model's own feature is never taken as the
    id; numbers without a header count the file's columns; ids read by pandas stay text;
    a blank trailing column is an empty column, not an id."""
    import pandas as pd

    X = np.random.default_rng(0).normal(size=(200, 2))
    rows = [f"{i},{a!r},{b!r}\n" for i, (a, b) in enumerate(X.tolist())]
    (tmp_path / "store.csv").write_text("store_id,x,y\n" + "".join(rows))
    model = str(tmp_path / "model.skebflow")
    assert main(["fit", str(tmp_path / "store.csv"), model, "--id", "none", *FIT]) == 0
    assert list(load(model).feature_names_in_) == ["store_id", "x", "y"]
    capsys.readouterr()
    assert main(["score", model, str(tmp_path / "store.csv")]) == 0  # store_id: a feature
    assert len(capsys.readouterr().out.split()) == 200
    (tmp_path / "two.csv").write_text(
        ",patient_id,x,y\n" + "".join(f"{i},P{i},1,2\n" for i in range(3))
    )
    assert main(["score", model, str(tmp_path / "two.csv")]) == 2
    assert_one_line_error(capsys.readouterr().err, "all look like row ids", "--id NAME")
    # no header: --id 1 --columns 3 4 are the file's columns 3 and 4
    plain = "".join(f"9{i},0,{a!r},{b!r}\n" for i, (a, b) in enumerate(X[:3].tolist()))
    (tmp_path / "plain.csv").write_text(plain)
    xy = str(tmp_path / "xy.skebflow")
    assert (
        main(["fit", str(tmp_path / "plain.csv"), xy, "--id", "1", "--columns", "3", "4", *FIT])
        == 0
    )
    assert load(xy).n_features_in_ == 2
    expected = load(xy).score_samples(X[:3])
    capsys.readouterr()
    assert main(["score", xy, str(tmp_path / "plain.csv"), "--id", "1", "--drop", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in out[1:]] == ["90", "91", "92"]
    np.testing.assert_allclose([float(line.split(",")[1]) for line in out[1:]], expected)
    assert main(["score", xy, str(tmp_path / "plain.csv"), "--id", "1", "--drop", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "not the id column 1")
    # pandas: ids as written; a parquet file's named index is its id column
    tsv = "".join(f"00{i}\t{a!r}\t{b!r}\n" for i, (a, b) in enumerate(X[:3].tolist()))
    (tmp_path / "rows.tsv").write_text("id\tx\ty\n" + tsv)
    (tmp_path / "xy.csv").write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in X.tolist()))
    named = str(tmp_path / "named.skebflow")
    assert main(["fit", str(tmp_path / "xy.csv"), named, *FIT]) == 0
    capsys.readouterr()
    assert main(["score", named, str(tmp_path / "rows.tsv")]) == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "000",
        "001",
        "002",
    ]
    frame = pd.DataFrame(
        X[:3], columns=["x", "y"], index=pd.Index(["a", "b", "c"], name="patient_id")
    )
    frame.to_parquet(tmp_path / "rows.parquet")
    assert main(["score", named, str(tmp_path / "rows.parquet")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "patient_id,log_density"
    # a trailing comma: an empty column, as before
    (tmp_path / "trailing.csv").write_text("x,y,\n1,2,\n3,4,\n")
    assert main(["score", named, str(tmp_path / "trailing.csv")]) == 1
    assert_one_line_error(capsys.readouterr().err, "is empty")
