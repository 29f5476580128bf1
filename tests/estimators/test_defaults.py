"""One source of truth per setting: the documented defaults are the signature's."""

from __future__ import annotations

import ast
import inspect
import re

from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow.objectives.registry import OBJECTIVE_OPTIONS, OBJECTIVE_SPECS
from skebflow.training.trainer import TrainConfig


def _documented_defaults(cls: type) -> dict[str, str]:
    pattern = re.compile(r"^    (\w+) : .*default=(.+)$", re.M)
    return dict(pattern.findall(cls.__doc__))


def test_docstring_defaults_match_the_signature():
    for cls in (EBFlowDensity, EBFlowOutlierDetector):
        signature = inspect.signature(cls.__init__).parameters
        documented = _documented_defaults(cls)
        assert set(documented) == set(signature) - {"self"}, cls
        for name, text in documented.items():
            default = signature[name].default
            assert ast.literal_eval(text) == default, (cls.__name__, name, text, default)


def test_estimator_reads_trainer_and_objective_defaults():
    params = EBFlowDensity().get_params()
    for name in ("max_iter", "n_iter_no_change", "tol", "max_grad_norm"):
        assert params[name] == getattr(TrainConfig, name), name
    for name, default in OBJECTIVE_OPTIONS.items():
        assert params[name] == default, name
    # Each exposed option is an option of exactly one objective.
    owners = [o for spec in OBJECTIVE_SPECS.values() for o in spec.options]
    assert sorted(owners) == sorted(OBJECTIVE_OPTIONS)
