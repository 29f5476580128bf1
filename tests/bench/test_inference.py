"""``bench inference`` (``--quick``): throughput of a fitted model's answers, and memory."""

import itertools
import json

import pytest

from skebflow.bench._cli import main
from skebflow.bench._inference import measure_memory


def test_inference_quick(tmp_path):
    assert main(["inference", "--quick", "--output", str(tmp_path), "--log", "quiet"]) == 0
    payload = json.loads((tmp_path / "inference.json").read_text())
    jobs = {(r["features"], r["model"], r["method"]) for r in payload["throughput"]}
    for d in (2, 8):
        assert (d, "EBFlow", "score_gradient") in jobs
        for model, method in itertools.product(
            ("EBFlow", "GMM", "KDE"), ("score_samples", "sample")
        ):
            assert (d, model, method) in jobs
    assert all(r["rows_per_s"] > 0 for r in payload["throughput"])
    memory = {(r["model"], r["method"]): r for r in payload["memory"]}
    assert memory["EBFlow", "sample"]["output_mb"] == pytest.approx(20_000 * 8 * 8 / 2**20)
    assert "| EBFlow | score_gradient |" in (tmp_path / "inference.md").read_text()


@pytest.mark.slow
def test_inference_memory_does_not_grow_with_the_rows():
    # Ten times the rows: the result grows tenfold, the rest of the peak stays a few
    # batches' worth (one batch of the old unbatched path was the whole input, ~10x it).
    methods = (("EBFlow", "score_samples"), ("EBFlow", "sample"))
    small, large = (
        measure_memory(methods, n_rows=n, features=16, log=lambda _: None)
        for n in (40_000, 400_000)
    )
    for a, b in zip(small, large, strict=True):
        assert b["output_mb"] == pytest.approx(10 * a["output_mb"])
        overhead = b["extra_peak_mb"] - b["output_mb"]
        assert overhead < 2 * a["extra_peak_mb"] + 16, (a, b)


def test_a_memory_child_that_fails_is_an_error_not_a_hang():
    """The parent waited on the child's queue forever when the child died without a
    record (a slow-suite run hung for 12 minutes on a defunct child)."""
    with pytest.raises(RuntimeError, match=r"memory measurement of Nope\.score_samples failed"):
        measure_memory((("Nope", "score_samples"),), n_rows=10, features=2, log=lambda _: None)
