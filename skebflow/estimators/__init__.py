"""The scikit-learn estimators."""

from skebflow.estimators.density import EBFlowDensity
from skebflow.estimators.outlier import AUTO_CONTAMINATION, EBFlowOutlierDetector

__all__ = ["AUTO_CONTAMINATION", "EBFlowDensity", "EBFlowOutlierDetector"]
