"""The ``demo`` command: the default flow and the peers on a 2-D toy, and a picture."""

from __future__ import annotations

import importlib.util

from skebflow.cli import main


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
