"""``bench anytime``: the quick run end to end, the training clock, the 1 % target.

No speed is asserted: the clock tests use a fake clock or compare against sleeps.
"""

import importlib.util
import json
import math
import time

import numpy as np
import pytest
import torch

from skebflow.bench._anytime import (
    ANYTIME_OBJECTIVES,
    ANYTIME_TASKS,
    TARGET_FRACTION,
    anytime_markdown,
    checkpoint_times,
    make_anytime_tasks,
    resize_digits,
    run_task,
    time_to_target,
)
from skebflow.bench._cli import _parser, main
from tests.bench.helpers import is_finite_float


def quiet(_: str) -> None:
    pass


def assert_consistent_with_curve(run: dict, target: float) -> None:
    """The reported crossing is the first checkpoint at or below the target, and so on."""
    seconds = [p["seconds"] for p in run["points"]]
    within = [p["nll"] is not None and p["nll"] <= target for p in run["points"]]
    crossing = run["target"]
    if crossing["seconds"] is None:
        assert not any(within)
        assert crossing["stays_from"] is None and not crossing["lost"]
        return
    index = seconds.index(crossing["seconds"])
    assert index == crossing["index"]
    assert within[index] and not any(within[:index])
    assert crossing["after"] == (seconds[index - 1] if index else None)
    assert crossing["lost"] == (not within[-1])
    if crossing["stays_from"] is not None:
        start = seconds.index(crossing["stays_from"])
        assert start >= index and all(within[start:])
        assert start == 0 or not within[start - 1]


# ------------------------------------------------------------------------ end to end
def test_anytime_quick_end_to_end(tmp_path):
    tasks = ["fc-784", "conv-1x28x28"]
    argv = ["anytime", "--quick", "--tasks", *tasks, "--budget", "0.1", "--checkpoints", "3"]
    assert main([*argv, "--output", str(tmp_path), "--log", "quiet"]) == 0
    payload = json.loads((tmp_path / "anytime.json").read_text())
    assert payload["benchmark"] == "anytime"
    assert {"cpu_count", "torch_threads", "device", "load_average_end"} <= set(payload["machine"])
    assert payload["config"]["objectives"] == list(ANYTIME_OBJECTIVES)
    results = payload["results"]
    assert [r["task"] for r in results] == tasks
    markdown = (tmp_path / "anytime.md").read_text()
    for result in results:
        assert result["features"] in (16, 48)  # the quick size
        assert is_finite_float(result["log_normalizer_ms"]) and result["log_normalizer_ms"] > 0
        assert [run["objective"] for run in result["runs"]] == list(ANYTIME_OBJECTIVES)
        reference, target = result["reference_nll"], result["target_nll"]
        ml = result["runs"][0]
        assert ml["error"] is None and reference == ml["final_nll"]
        assert math.isclose(target, reference + TARGET_FRACTION * abs(reference))
        assert ml["target"]["seconds"] is not None  # ML reaches its own final NLL
        assert ml["time_ratio_to_ml"] == 1.0
        for run in result["runs"]:
            points = run["points"]
            # The untrained flow, at 0 s or once its whitening map is fitted (the score
            # objectives on the FC flow, as the estimator's whiten="auto").
            assert points[0]["seconds"] == run["whitening_seconds"] and points[0]["steps"] == 0
            whitened = result["architecture"] == "fc" and run["objective"] != "ml"
            assert (run["whitening_seconds"] > 0) is whitened
            assert [p["seconds"] for p in points] == sorted(p["seconds"] for p in points)
            if run["error"] is None:
                assert run["training_seconds"] >= result["budget"]
                assert run["steps"] >= 1 and run["steps_per_second"] > 0
            assert_consistent_with_curve(run, target)
            ml_curve = [(p["seconds"], p["nll"]) for p in ml["points"]]
            reached = [t for t, nll in ml_curve if nll is not None and nll <= run["final_nll"]]
            assert run["ml_seconds_to_final"] == (reached[0] if reached else None)
        section = markdown.split(f"### {result['task']}:")[1].split("### ")[0]
        rows = [
            line for line in section.splitlines() if line.startswith("| ") and "---" not in line
        ]
        assert [row.split("|")[1].strip() for row in rows[1:]] == list(ANYTIME_OBJECTIVES)
        assert "within 1 % of ML's final at (s)" in rows[0]
    if importlib.util.find_spec("matplotlib") is not None:
        for task in tasks:
            assert (tmp_path / f"anytime-{task}.png").stat().st_size > 0


def test_the_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["anytime", "--help"])
    text = capsys.readouterr().out
    assert "fc-784" in text and "--budget SECONDS" in text and "conv-3x32x32" in text
    assert "``" not in text and ":func:" not in text and ":mod:" not in text
    with pytest.raises(SystemExit):
        _parser().parse_args(["anytime", "--tasks", "fc-99"])


def test_tasks_at_full_size_have_the_documented_shapes():
    tasks = make_anytime_tasks()
    assert [t.name for t in tasks] == list(ANYTIME_TASKS)
    assert [t.features for t in tasks] == [784, 3072, 784, 3072]
    assert [t.architecture for t in tasks] == ["fc", "fc", "conv", "conv"]
    with pytest.raises(ValueError, match="Unknown anytime tasks"):
        make_anytime_tasks(("fc-5",))


def test_resized_digits_are_integer_images_with_equal_channels():
    digits = np.random.default_rng(0).integers(0, 17, size=(5, 64)).astype(float)
    rows = resize_digits(digits, (3, 32, 32))
    assert rows.shape == (5, 3072)
    assert np.array_equal(rows, np.round(rows)) and rows.min() >= 0 and rows.max() <= 16
    images = rows.reshape(5, 3, 32, 32)
    assert np.array_equal(images[:, 0], images[:, 2])
    np.testing.assert_array_equal(resize_digits(digits, (1, 8, 8)), digits)


# ------------------------------------------------------------------- the training clock
class FakeClock:
    """Advances by one tick at every reading; an evaluation can add a long delay.

    The tick and the delays are binary fractions, so that differences of readings are
    exact whatever the delays added before.
    """

    def __init__(self, tick: float = 1 / 128) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_the_training_clock_excludes_slow_evaluations():
    task = make_anytime_tasks(("fc-784",), quick=True)[0]
    options = {"budget": 1.0, "n_checkpoints": 5, "first_fraction": 0.1, "warmup": 0}
    runs = {}
    for delay in (0.0, 1024.0):
        clock = FakeClock()

        def evaluate(flow, clock=clock, delay=delay):
            clock.now += delay
            return 1.0

        result = run_task(task, ("ml", "dsm"), clock=clock, evaluate=evaluate, log=quiet, **options)
        runs[delay] = result["runs"]
        schedule = result["checkpoints"]
        for run in result["runs"]:
            seconds = [p["seconds"] for p in run["points"]]
            assert len(seconds) == len(schedule) + 1  # no checkpoint was skipped
            for reached, scheduled in zip(seconds[1:], schedule, strict=True):
                assert scheduled <= reached < scheduled + 0.05
            assert run["training_seconds"] < options["budget"] + 0.05
            assert all(p["evaluation_seconds"] >= delay for p in run["points"])
    # The slow evaluations change neither the training seconds nor the steps taken.
    for fast, slow in zip(runs[0.0], runs[1024.0], strict=True):
        assert [p["seconds"] for p in fast["points"]] == [p["seconds"] for p in slow["points"]]
        assert [p["steps"] for p in fast["points"]] == [p["steps"] for p in slow["points"]]


def test_sleeping_evaluations_do_not_count_as_training():
    task = make_anytime_tasks(("fc-784",), quick=True)[0]
    pause = 0.15

    def evaluate(flow):
        time.sleep(pause)
        return 1.0

    start = time.perf_counter()
    result = run_task(
        task, ("ml",), budget=0.05, n_checkpoints=2, evaluate=evaluate, log=quiet, warmup=0
    )
    wall = time.perf_counter() - start
    (run,) = result["runs"]
    n_evaluations = len(run["points"])
    assert n_evaluations == 3 and wall >= n_evaluations * pause
    # the first checkpoint is scheduled at 0.5 ms: one evaluation (0.15 s) would pass it
    assert run["points"][1]["seconds"] < pause
    assert run["training_seconds"] < 0.05 + pause


# ------------------------------------------------------------------------ the 1 % target
def test_time_to_target_reached_and_kept():
    crossing = time_to_target([0.0, 1.0, 2.0, 4.0], [10.0, 7.0, 5.9, 5.0], target=6.0)
    assert crossing == {
        "seconds": 2.0,
        "index": 2,
        "after": 1.0,
        "stays_from": 2.0,
        "lost": False,
    }


def test_time_to_target_never_reached():
    crossing = time_to_target([0.0, 1.0, 2.0], [10.0, 7.0, 6.5], target=6.0)
    assert crossing["seconds"] is None and crossing["index"] is None
    assert crossing["stays_from"] is None and crossing["after"] is None
    assert crossing["lost"] is False


def test_time_to_target_reached_then_lost():
    crossing = time_to_target([0.0, 1.0, 2.0, 3.0], [10.0, 5.0, 5.5, 6.5], target=6.0)
    assert crossing["seconds"] == 1.0 and crossing["after"] == 0.0
    assert crossing["lost"] is True and crossing["stays_from"] is None


def test_time_to_target_reached_lost_and_reached_again():
    values = [10.0, 5.0, 7.0, 5.5, 5.8]
    crossing = time_to_target([0.0, 1.0, 2.0, 3.0, 4.0], values, target=6.0)
    assert crossing["seconds"] == 1.0 and crossing["stays_from"] == 3.0
    assert crossing["lost"] is False


def test_time_to_target_edge_cases():
    first = time_to_target([0.0, 1.0], [5.0, 4.0], target=6.0)
    assert first["seconds"] == 0.0 and first["after"] is None and first["stays_from"] == 0.0
    nan = time_to_target([0.0, 1.0, 2.0], [math.nan, 5.0, math.inf], target=6.0)
    assert nan["seconds"] == 1.0 and nan["lost"] is True
    exact = time_to_target([0.0, 1.0], [7.0, 6.0], target=6.0)  # at the target counts
    assert exact["seconds"] == 1.0
    with pytest.raises(ValueError, match="2 times but 3 values"):
        time_to_target([0.0, 1.0], [1.0, 2.0, 3.0], target=1.0)


def test_checkpoint_times_are_geometric_up_to_the_budget():
    times = checkpoint_times(120.0, 30, first_fraction=0.01)
    assert len(times) == 30 and times[-1] == 120.0
    assert math.isclose(times[0], 1.2)
    ratios = np.diff(np.log(times))
    np.testing.assert_allclose(ratios, ratios[0])
    assert checkpoint_times(5.0, 1) == [5.0]
    with pytest.raises(ValueError):
        checkpoint_times(0.0, 3)
    with pytest.raises(ValueError):
        checkpoint_times(1.0, 3, first_fraction=0.0)


def test_the_table_says_when_a_target_is_not_reached():
    def run(objective, seconds, error=None):
        target = {"seconds": seconds, "after": None, "stays_from": seconds, "lost": False}
        return {
            "objective": objective,
            "steps": 3,
            "steps_per_second": 1.5,
            "final_nll": 10.0,
            "final_bits_per_dim": 1.0,
            "best_nll": 9.0,
            "error": error,
            "time_ratio_to_ml": None,
            "target": target,
        }

    result = {
        "task": "fc-784",
        "features": 784,
        "architecture": "fc",
        "image_shape": [1, 28, 28],
        "n_train": 10,
        "n_test": 5,
        "budget": 2.0,
        "reference_nll": 10.0,
        "target_nll": 10.1,
        "log_normalizer_ms": 2.0,
        "runs": [run("ml", 2.0), run("dsm", None), run("ssm", None, error="TrainingDivergedError")],
    }
    text = anytime_markdown([result])
    assert "| dsm | 1.5 | 3 |" in text and "not reached in the budget" in text
    assert "ssm (failed: TrainingDivergedError)" in text
    assert "One exact log Z (what a per-epoch validation adds): 2.0 ms." in text


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device (none in CI)",
)
def test_anytime_runs_on_cuda():
    task = make_anytime_tasks(("conv-3x32x32",), quick=True)[0]
    result = run_task(task, ("ml", "ssm"), budget=0.05, n_checkpoints=2, device="cuda", log=quiet)
    for run in result["runs"]:
        assert run["error"] is None and run["steps"] >= 1
        assert all(is_finite_float(p["nll"]) for p in run["points"])


def test_a_non_finite_checkpoint_is_recorded_and_reported_not_dropped():
    task = make_anytime_tasks(("fc-784",), quick=True)[0]
    calls = iter([1.0, math.nan, 2.0, math.inf] * 10)

    def evaluate(flow):
        return next(calls)

    result = run_task(
        task, ("ml",), budget=0.05, n_checkpoints=3, warmup=0, evaluate=evaluate, log=quiet
    )
    (run,) = result["runs"]
    texts = [p["nonfinite_nll"] for p in run["points"]]
    assert texts[1] == "nan" and texts[0] is None
    assert run["n_nonfinite_checkpoints"] == sum(t is not None for t in texts) >= 1
    assert "checkpoints with a non-finite NLL" in anytime_markdown([result])


def test_score_matching_on_the_fc_flow_starts_whitened_unless_asked_not_to():
    task = make_anytime_tasks(("fc-784",), quick=True)[0]
    options = {"budget": 0.02, "n_checkpoints": 1, "warmup": 0, "log": quiet}
    whitened = {r["objective"]: r for r in run_task(task, ("ml", "ssm"), **options)["runs"]}
    bare = {
        r["objective"]: r for r in run_task(task, ("ml", "ssm"), whiten=False, **options)["runs"]
    }
    assert whitened["ml"]["whitening_seconds"] == 0.0  # ML is not whitened (invariant)
    assert whitened["ssm"]["whitening_seconds"] > 0.0
    assert bare["ssm"]["whitening_seconds"] == 0.0
    # The untrained checkpoints differ: the whitened start is the Gaussian fit of the
    # data, much better than the bare flow's start; ML's start is the same in both runs.
    start = {name: run["points"][0]["nll"] for name, run in whitened.items()}
    assert start["ssm"] < bare["ssm"]["points"][0]["nll"]
    assert start["ml"] == bare["ml"]["points"][0]["nll"]
