"""``bench scale`` (the default against GaussianMixture as rows grow) and ``bench detector``."""

from __future__ import annotations

import importlib.util
import json

from skebflow.bench import main
from skebflow.bench._scale import scale_markdown


def test_scale_quick_writes_rows_a_table_and_a_plot(tmp_path):
    assert main(["scale", "--quick", "--output", str(tmp_path), "--log", "quiet"]) == 0
    rows = json.loads((tmp_path / "scale.json").read_text())["rows"]
    assert {(r["method"], r["n_train"]) for r in rows} == {
        (m, n) for m in ("EBFlow", "GaussianMixture") for n in (300, 600)
    }
    assert all(r["seconds"] > 0 for r in rows)
    assert all(r["epochs"] == 2 for r in rows if r["method"] == "EBFlow")
    table = (tmp_path / "scale.md").read_text()
    assert "| 2 | 600 |" in table and "×" in table
    if importlib.util.find_spec("matplotlib") is None:  # the plot needs the plot extra
        assert not (tmp_path / "scale.png").exists()
    else:
        assert (tmp_path / "scale.png").stat().st_size > 1000


def test_the_table_reports_the_time_ratio_of_the_two_methods():
    rows = [
        {"method": "EBFlow", "n_train": 1000, "n_features": 8, "seconds": 6.0,
         "held_out": -11.0, "epochs": 40},
        {"method": "GaussianMixture", "n_train": 1000, "n_features": 8, "seconds": 2.0,
         "held_out": -10.5, "n_components": 6},
    ]  # fmt: skip
    line = scale_markdown(rows).splitlines()[2]
    assert line == "| 8 | 1,000 | 6.0 (40) | 2.0 (6) | 3.0× | -11.0000 | -10.5000 |"


def test_detector_quick_writes_its_table_through_the_shared_writer(tmp_path):
    argv = ["detector", "--quick", "--contaminations", "0.1", "--output", str(tmp_path)]
    assert main([*argv, "--log", "quiet"]) == 0
    rows = json.loads((tmp_path / "detector.json").read_text())["rows"]
    assert {r["method"] for r in rows} >= {"IsolationForest", "EBFlow (held-out)"}
    assert (tmp_path / "detector.md").read_text().startswith("Wall time ")
