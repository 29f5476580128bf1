"""The training loop (torch only): a stateful trainer with optimizer, schedule, EMA, stopping."""

from skebflow.training.ema import EMA
from skebflow.training.trainer import (
    TrainConfig,
    Trainer,
    TrainResult,
    make_optimizer,
    train,
    train_step,
)

__all__ = ["EMA", "TrainConfig", "TrainResult", "Trainer", "make_optimizer", "train", "train_step"]
