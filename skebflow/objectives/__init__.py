"""Training objectives (torch only): likelihood, score matching, fast paths, regularizers."""

from skebflow.objectives.likelihood import EnergyModel, mean_energy, ml, sml
from skebflow.objectives.registry import (
    OBJECTIVES,
    SCORE_OBJECTIVES,
    bind_objective,
    make_regularizers,
)
from skebflow.objectives.regularizers import SingularValueBarrier
from skebflow.objectives.score_matching import SM_MAX_FEATURES, dsm, fdssm, sm, ssm

__all__ = [
    "OBJECTIVES",
    "SCORE_OBJECTIVES",
    "SM_MAX_FEATURES",
    "EnergyModel",
    "SingularValueBarrier",
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
