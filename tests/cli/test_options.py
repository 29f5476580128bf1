"""Generated options: one per estimator parameter, plain help, parsed values."""

from __future__ import annotations

import pytest

from skebflow import EBFlowDensity, load
from skebflow.cli import main
from skebflow.cli._main import _parser
from skebflow.cli._options import estimator_params, parameter_docs
from tests.cli.helpers import FIT

MARKUP = ("``", ":class:", ":func:", ":math:", ":mod:", ">>>")


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
