"""The gallery in ``examples/``: format of every script, and a quick run of each.

The quick run starts one subprocess (``tests/examples/runner.py``) that runs every
example with ``SKEBFLOW_EXAMPLES_QUICK=1`` and ``MPLBACKEND=Agg`` in a temporary
folder, and checks that each one finished and saved at least one figure that is not
blank. It needs matplotlib (the ``examples`` extra) and is skipped without it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
RUNNER = Path(__file__).with_name("runner.py")
#: The quick runs together take about a minute on one core; a loaded machine gets slack.
TIMEOUT_S = 600

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="the examples draw with matplotlib, which is not installed "
    '(pip install -e ".[test]" or ".[examples]")',
)


def test_there_is_a_gallery():
    assert len(SCRIPTS) >= 7
    header = (EXAMPLES / "README.txt").read_text().splitlines()
    assert header[0] == "Examples" and set(header[1]) == {"="}
    assert any(line.strip() for line in header[2:])


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_example_is_in_sphinx_gallery_format(path):
    source = path.read_text()
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring is not None, "a module docstring with an RST title"
    lines = docstring.splitlines()
    title, underline = lines[0], lines[1]
    assert title.strip() and re.fullmatch(r"=+", underline) and len(underline) >= len(title)
    assert lines[2] == "" and lines[3].strip(), "a paragraph after the title"
    assert "# %%" in source, "cells separated by '# %%'"
    assert "SKEBFLOW_EXAMPLES_QUICK" in source and "SKEBFLOW_EXAMPLES_FIGDIR" in source
    assert "plt.show()" in source


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Run every example once in quick mode; return (records, figure folder)."""
    folder = tmp_path_factory.mktemp("examples")
    figdir, results = folder / "figures", folder / "results.json"
    env = {
        **os.environ,
        "SKEBFLOW_EXAMPLES_QUICK": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, str(RUNNER), str(results), str(figdir), *map(str, SCRIPTS)]
    completed = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return json.loads(results.read_text()), figdir


@needs_matplotlib
@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_example_runs_quickly_and_draws(path, quick_runs):
    import matplotlib.image

    records, figdir = quick_runs
    record = records[path.stem]
    assert record["status"] == "ok", record["status"]
    figures = sorted((figdir / path.stem).glob("*.png"))
    assert figures, f"{path.name} saved no figure"
    for figure in figures:
        pixels = matplotlib.image.imread(figure)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert np.ptp(pixels[..., :3]) > 0.5, f"{figure.name} is blank"
        # more than the frame: a good share of the pixels differ from the background
        background = pixels[0, 0, :3]
        assert np.mean(np.any(pixels[..., :3] != background, axis=-1)) > 0.02
