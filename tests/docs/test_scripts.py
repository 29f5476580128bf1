"""The scripts under ``docs/scripts`` that the docs cite to reproduce a measurement start.

A full run takes minutes (they are the measurements themselves); ``--help`` imports the
script and everything it uses, which is what breaks when the library changes under it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[2] / "docs" / "scripts").glob("*.py"))


def test_there_are_scripts() -> None:
    assert SCRIPTS, "docs/scripts has no script"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_starts(script: Path) -> None:
    pytest.importorskip("matplotlib", reason="the scripts draw with matplotlib")
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
