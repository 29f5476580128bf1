"""One source of truth per setting: the documented defaults are the signature's."""

from __future__ import annotations

import ast
import inspect
import re

import numpy as np
import pytest

from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow.estimators import DEQUANTIZED_LOGIT_EPS
from skebflow.objectives._registry import OBJECTIVE_OPTIONS, OBJECTIVE_SPECS
from skebflow.training._trainer import TrainConfig
from tests.helpers import quietly


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


@pytest.mark.parametrize(
    ("architecture", "dequantize", "eps"),
    [("spline", True, DEQUANTIZED_LOGIT_EPS), ("spline", False, 1e-6), ("fc", True, 1e-6)],
)
def test_the_logit_squeeze_follows_the_architecture_in_fit_and_partial_fit(
    architecture, dequantize, eps
):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 8, size=(80, 3)).astype(float)
    params = {"architecture": architecture, "preprocessing": "logit", "bounds": (0, 7)}
    params.update(dequantize=dequantize, n_blocks=1, hidden_features=8, max_iter=1)
    with quietly():
        fitted = EBFlowDensity(**params, random_state=0).fit(X)
        chunked = EBFlowDensity(**params, random_state=0).partial_fit(X)
    for est in (fitted, chunked):
        (logit,) = [t for t in est.preprocessing_.transforms if type(t).__name__ == "Logit"]
        assert logit.eps == eps


def test_fit_bounds_its_epochs_and_validation_rows_and_partial_fit_takes_whole_chunks(monkeypatch):
    """Large data: ``fit`` trains each epoch on at most MAX_EPOCH_ROWS rows and holds out
    at most MAX_VALIDATION_ROWS (the rest train); ``partial_fit`` passes over each chunk."""
    import skebflow.estimators._training_run as training_run
    from skebflow.estimators import _defaults as auto
    from skebflow.estimators._settings import resolve_settings

    X = np.random.default_rng(0).normal(size=(400, 2))
    monkeypatch.setattr(training_run, "MAX_VALIDATION_ROWS", 7)
    est = EBFlowDensity(max_iter=1, random_state=0).fit(X)
    assert len(est._validation_index) == 7  # 10 % would be 40
    settings = resolve_settings(EBFlowDensity().get_params(), 2)
    assert settings.train_config(10**6).max_epoch_rows == auto.MAX_EPOCH_ROWS == 10_240
    assert settings.train_config(10**6, whole_passes=True).max_epoch_rows is None
    assert round(settings.train_config(10**6).ema_decay, 4) == 0.95  # one 20-step epoch
