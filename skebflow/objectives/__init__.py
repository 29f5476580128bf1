"""Training objectives (torch only): likelihood, score matching, fast paths, regularizers."""

from skebflow.objectives._likelihood import EnergyModel, mean_energy, ml, sml
from skebflow.objectives._registry import (
    OBJECTIVE_OPTIONS,
    OBJECTIVES,
    SCORE_OBJECTIVES,
    barrier_applies,
    bind_objective,
    make_regularizers,
)
from skebflow.objectives._regularizers import SingularValueBarrier
from skebflow.objectives._score_matching import SM_MAX_FEATURES, dsm, fdssm, sm, ssm

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_OPTIONS",
    "SCORE_OBJECTIVES",
    "SM_MAX_FEATURES",
    "EnergyModel",
    "SingularValueBarrier",
    "barrier_applies",
    "bind_objective",
    "dsm",
    "fdssm",
    "make_regularizers",
    "mean_energy",
    "ml",
    "sm",
    "sml",
    "ssm",
]
