"""Helpers of the command-line tests: run ``python -m skebflow``, check one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

FIT = ["--max-iter", "2"]


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
