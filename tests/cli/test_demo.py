"""The ``demo`` command: the default flow and the peers on a 2-D toy, and a picture."""

from __future__ import annotations

import importlib.util

import numpy as np

from skebflow.cli import main


def test_demo_smoke_prints_the_default_and_the_peers(tmp_path, capsys):
    argv = ["demo", "--n-samples", "300", "--max-iter", "2", "--objectives", "auto", "dsm"]
    argv += ["--table", "none"]
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


def test_demo_digits_part_scores_the_default_beside_the_peers(tmp_path, capsys):
    """``--table digits`` (the default): held-out scores of the default flow, the KDE and
    the GMM on the digits table, and a picture of held-out digits above their samples."""
    argv = ["demo", "--n-samples", "200", "--max-iter", "1", "--objectives", "auto"]
    assert main([*argv, "--table-max-iter", "1", "--output", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    table = captured.out.split("data set: digits", 1)[1]
    assert "1347 training, 450 held-out rows of 64 columns" in table
    lines = [line.split() for line in table.splitlines() if line.startswith("  ")]
    names = [line[0] for line in lines]
    assert names[0] == "EBFlowDensity()" and any(n.startswith("GaussianMixture(") for n in names)
    assert all(np.isfinite(float(line[-1])) for line in lines[1:])  # the peers' scores
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "demo-digits.png").stat().st_size > 0
    assert "1 epochs" in table
