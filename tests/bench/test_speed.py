"""``bench speed`` (``--quick``) and the image flows it times.

No timing is asserted: speed is measured by the benchmark, never by tests.
"""

import importlib.util
import json

import pytest

from skebflow.bench._cli import main
from skebflow.bench._speed import IMAGE_SPEED_OBJECTIVES, SPEED_OBJECTIVES, run_speed
from tests.bench.helpers import is_finite_float


def test_speed_quick(tmp_path):
    assert main(["speed", "--quick", "--output", str(tmp_path), "--log", "quiet"]) == 0
    payload = json.loads((tmp_path / "speed.json").read_text())
    assert payload["benchmark"] == "speed"
    assert {"cpu_count", "torch_threads", "device", "torch"} <= set(payload["machine"])
    records = payload["results"]
    dims = payload["config"]["features"]
    assert {(r["features"], r["objective"]) for r in records} == {
        (d, name) for d in dims for name in SPEED_OBJECTIVES
    }
    for record in records:
        keys = {"median_ms", "q25_ms", "q75_ms", "ratio_to_ml", "speedup_vs_ml", "ratio_to_floor"}
        assert keys <= set(record)
        if record["objective"] in ("floor", "ml"):
            assert record["error"] is None
        if record["error"] is None:
            assert record["n_timed"] >= 1
            assert all(is_finite_float(record[key]) and record[key] > 0 for key in keys)
    markdown = (tmp_path / "speed.md").read_text()
    assert "| objective | ms/step (median) |" in markdown
    for d in dims:
        assert f"### D = {d}" in markdown
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "speed.png").stat().st_size > 0


def test_speed_times_the_paper_cnn_on_images(tmp_path):
    records = run_speed(
        [], image_shapes=((1, 4, 4),), repeats=1, steps_per_round=1, warmup=1, log=lambda _: None
    )
    assert [r["objective"] for r in records] == list(IMAGE_SPEED_OBJECTIVES)
    for r in records:
        assert r["architecture"] == "conv" and r["image_shape"] == (1, 4, 4)
        assert r["features"] == 16 and r["error"] is None and r["median_ms"] > 0
    with pytest.raises(SystemExit):
        main(["speed", "--images", "28x28", "--output", str(tmp_path), "--log", "quiet"])
