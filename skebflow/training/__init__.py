"""The training loop (torch only): a stateful trainer with optimizer, schedule, EMA, stopping."""

from skebflow.training._config import LossFn, PrepareFn, Regularizer, ScoreFn
from skebflow.training._diagnostics import diagnose
from skebflow.training._ema import EMA
from skebflow.training._trainer import (
    TrainConfig,
    Trainer,
    TrainResult,
    make_optimizer,
    train,
    train_step,
)

__all__ = [
    "EMA",
    "LossFn",
    "PrepareFn",
    "Regularizer",
    "ScoreFn",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "diagnose",
    "make_optimizer",
    "train",
    "train_step",
]
