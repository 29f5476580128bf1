"""The command line's fixture: data files and a model fitted on them (one folder per module).

A few commands run through ``subprocess`` (exit status, stdout/stderr, no traceback); the
rest call ``main`` in-process, which is much faster (each subprocess imports torch).
"""

from __future__ import annotations

import numpy as np
import pytest

from skebflow.cli import main
from tests.cli.helpers import FIT


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
