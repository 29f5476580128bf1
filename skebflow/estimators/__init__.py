"""The scikit-learn estimators: where scikit-learn meets torch.

:class:`EBFlowDensity` (the density), :class:`EBFlowOutlierDetector` (outliers by
thresholding a log-density), :class:`EBFlowImputer` (missing values by MCMC on the flow),
and :func:`load` / :func:`save` (model files that load without running code). The
``"auto"`` rules and their constants live in one module, re-exported here for the
benchmarks.
"""

from skebflow.estimators._defaults import (
    AUTO_BATCH_STEPS,
    AUTO_EMA_MAX_DECAY,
    AUTO_MIN_SINGULAR_VALUE,
    DEFAULT_LEARNING_RATES,
    DEGENERATE_JITTER,
    DEQUANTIZED_LOGIT_EPS,
    auto_whiten,
)
from skebflow.estimators._density import EBFlowDensity
from skebflow.estimators._imputer import EBFlowImputer
from skebflow.estimators._outlier import AUTO_CONTAMINATION, EBFlowOutlierDetector
from skebflow.estimators._persistence import load, save
from skebflow.estimators._training_run import whitening_covariance
from skebflow.sampling import ImputationReport

__all__ = [
    "AUTO_BATCH_STEPS",
    "AUTO_CONTAMINATION",
    "AUTO_EMA_MAX_DECAY",
    "AUTO_MIN_SINGULAR_VALUE",
    "DEFAULT_LEARNING_RATES",
    "DEGENERATE_JITTER",
    "DEQUANTIZED_LOGIT_EPS",
    "EBFlowDensity",
    "EBFlowImputer",
    "EBFlowOutlierDetector",
    "ImputationReport",
    "auto_whiten",
    "load",
    "save",
    "whitening_covariance",
]
